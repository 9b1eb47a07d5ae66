// shardcast operator's dashboard. Plain JS, no dependencies: it polls the admin API
// every second with the key given at login (X-API-Key) and renders the instances,
// the slot map, the topology timeline and a channel lookup. The page itself holds
// no data: without a key it shows only the login form.
//
// DOM hooks for tests and scripts (stable):
//   #instances tbody tr[data-instance=<id>] with td[data-field=<report field>]
//   #slotmap .seg[data-from][data-to][data-owner]   (data-owner="" = unassigned)
//   #shards li[data-primary] (li[data-replica] inside), .health[data-health=ok|failing|failed|unknown]
//   #node-channels tr[data-node] td[data-instance][data-channels]
//   #timeline tr[data-instance][data-seq][data-kind][data-category][data-at]
//   #lookup-result[data-channel][data-slot][data-owner][data-instances-holding]
//   body[data-state=login|dashboard], body[data-polls=<successful polls>]

const KEY_STORE = 'shardcast.dashboard.key';
const POLL_MS = 1000;
const RING = 300; // samples kept per instance: 5 minutes at one per second
const STALE_MS = 3000;
const MAX_EVENTS = 1000;
const SHOWN_EVENTS = 300;
const SLOTS = 16384;
const PALETTE = [
  '#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#b07aa1', '#76b7b2',
  '#edc948', '#ff9da7', '#9c755f', '#8cd17d', '#86bcb6', '#d4a6c8',
];

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'style') Object.assign(e.style, v);
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class Unauthorized extends Error {}

// ---------------------------------------------------------------- state

let key = sessionStorage.getItem(KEY_STORE) || null;
let generation = 0; // bumped on login/logout: stale polls drop their results
let timer = null;
let polls = 0;

const rings = new Map(); // instance id -> { last, conn: [], inn: [], out: [] }
const events = new Map(); // "<id>|<started>|<seq>" -> event
let eventsVersion = 0;
let eventsRendered = -1;
let dashSeq = 0; // the dashboard's own events (instances joining/leaving)
let knownInstances = null; // Map id -> address, after the first poll
const colours = new Map(); // primary address -> colour
const shardMemory = new Map(); // node address -> the shard's nodes when last seen in the map
let slotmapSig = '';
let currentSegments = [];
let lastInstances = [];
let answeredBy = '';
let lastCluster = null;
let lookupShown = null; // the last lookup answer

function resetData() {
  rings.clear();
  events.clear();
  eventsVersion = 0;
  eventsRendered = -1;
  knownInstances = null;
  slotmapSig = '';
  currentSegments = [];
  lastInstances = [];
  answeredBy = '';
  lastCluster = null;
  lookupShown = null;
  shardMemory.clear();
  polls = 0;
  document.body.dataset.polls = '0';
  $('#instances tbody').replaceChildren();
  $('#slotmap').replaceChildren();
  $('#shards').replaceChildren();
  $('#other-nodes').replaceChildren();
  $('#node-channels thead tr').replaceChildren();
  $('#node-channels tbody').replaceChildren();
  $('#timeline tbody').replaceChildren();
  $('#timeline-empty').hidden = false;
  const lr = $('#lookup-result');
  lr.replaceChildren();
  lr.hidden = true;
  for (const a of ['data-owner', 'data-slot', 'data-channel', 'data-instances-holding', 'data-error']) {
    lr.removeAttribute(a);
  }
  $('#answered-by').textContent = '';
  $('#cluster-meta').textContent = '';
  $('#poll-error').hidden = true;
  $('#status').textContent = '';
}

// ---------------------------------------------------------------- API

async function api(path, k = key) {
  const headers = { Accept: 'application/json' };
  if (k) headers['X-API-Key'] = k;
  const res = await fetch(path, { headers, cache: 'no-store', credentials: 'omit' });
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* not JSON */
  }
  const message = body && body.error && body.error.message;
  if (res.status === 401) throw new Unauthorized(message || 'unauthorized');
  if (!res.ok) {
    const e = new Error(message || `HTTP ${res.status}`);
    e.status = res.status;
    throw e;
  }
  return body;
}

// ---------------------------------------------------------------- login

function showLogin(message) {
  generation++;
  clearTimeout(timer);
  key = null;
  sessionStorage.removeItem(KEY_STORE);
  resetData();
  document.body.dataset.state = 'login';
  $('#dashboard').hidden = true;
  $('#summary').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  const err = $('#login-error');
  err.textContent = message || '';
  err.hidden = !message;
  $('#login-submit').disabled = false;
  $('#key').focus();
}

function showDashboard() {
  document.body.dataset.state = 'dashboard';
  $('#login').hidden = true;
  $('#login-error').hidden = true;
  $('#dashboard').hidden = false;
  $('#summary').hidden = false;
  $('#logout').hidden = false;
}

function refusedMessage(why) {
  return `Wrong or missing key: the server refused it (${why}). Enter the server's --admin-key or an API key.`;
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#key');
  const k = input.value.trim();
  if (!k) {
    showLogin('Wrong or missing key: enter the server\'s --admin-key or an API key.');
    return;
  }
  $('#login-submit').disabled = true;
  const gen = ++generation;
  try {
    const first = await api('/api/instances', k);
    if (gen !== generation) return;
    key = k;
    sessionStorage.setItem(KEY_STORE, k);
    input.value = '';
    resetData();
    showDashboard();
    renderInstances(first);
    startPolling();
  } catch (e) {
    if (gen !== generation) return;
    showLogin(e instanceof Unauthorized ? refusedMessage(e.message) : `Cannot reach the server: ${e.message}`);
  } finally {
    $('#login-submit').disabled = false;
  }
});

$('#logout').addEventListener('click', () => showLogin(''));

// ---------------------------------------------------------------- polling

function startPolling() {
  clearTimeout(timer);
  const gen = ++generation;
  tick(gen);
}

async function tick(gen) {
  const started = performance.now();
  try {
    const [inst, cluster] = await Promise.all([api('/api/instances'), api('/api/cluster')]);
    if (gen !== generation) return;
    renderInstances(inst);
    renderCluster(cluster);
    renderTimeline();
    polls++;
    document.body.dataset.polls = String(polls);
    $('#poll-error').hidden = true;
    $('#status').textContent = `answered by ${inst.answered_by} · updated ${clock(Date.now())}`;
    $('#status').classList.remove('bad');
  } catch (e) {
    if (gen !== generation) return;
    if (e instanceof Unauthorized) {
      showLogin(refusedMessage(e.message));
      return;
    }
    const pe = $('#poll-error');
    pe.textContent = `Cannot read the admin API (${e.message}); showing the last data, retrying every second.`;
    pe.hidden = false;
    $('#status').textContent = `update failed at ${clock(Date.now())}`;
    $('#status').classList.add('bad');
  }
  if (gen !== generation) return;
  const wait = Math.max(0, POLL_MS - (performance.now() - started));
  timer = setTimeout(() => tick(gen), wait);
}

// ---------------------------------------------------------------- formatting

function pad(n, w = 2) {
  return String(n).padStart(w, '0');
}

function clock(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function clockMs(ms) {
  const d = new Date(ms);
  const today = new Date();
  const day = d.toDateString() === today.toDateString()
    ? ''
    : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `;
  return `${day}${clock(ms)}.${pad(d.getMilliseconds(), 3)}`;
}

function duration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

const intFmt = new Intl.NumberFormat('en-US');
function int(n) {
  return typeof n === 'number' ? intFmt.format(n) : '–';
}
function rate(n) {
  if (typeof n !== 'number') return '–';
  return n >= 100 ? intFmt.format(Math.round(n)) : n.toFixed(1);
}

function colourFor(addr) {
  if (!addr) return 'transparent';
  let c = colours.get(addr);
  if (!c) {
    const i = colours.size;
    c = i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360} 55% 55%)`;
    colours.set(addr, c);
  }
  return c;
}

function swatch(addr) {
  return el('span', { class: 'swatch', style: { background: colourFor(addr) } });
}

// ---------------------------------------------------------------- sparklines

function sample(inst) {
  let r = rings.get(inst.id);
  if (!r) {
    r = { last: null, conn: [], inn: [], out: [] };
    rings.set(inst.id, r);
  }
  if (r.last === inst.reported_at_ms) return r; // the same report again
  r.last = inst.reported_at_ms;
  r.conn.push(Number(inst.connections) || 0);
  r.inn.push(Number(inst.messages_in_per_sec) || 0);
  r.out.push(Number(inst.messages_out_per_sec) || 0);
  for (const a of [r.conn, r.inn, r.out]) if (a.length > RING) a.splice(0, a.length - RING);
  return r;
}

const SVG = 'http://www.w3.org/2000/svg';
function spark(values, colour, label) {
  const W = 90;
  const H = 24;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', W);
  svg.setAttribute('height', H);
  svg.setAttribute('class', 'spark');
  const max = Math.max(1, ...values) * 1.15; // some headroom above the peak
  // One sample per second, newest at the right; until 30 s are sampled they span the
  // first 30 s of the axis, then the axis grows to the ring's 5 minutes.
  const step = W / (Math.max(30, values.length) - 1);
  const pts = values.map((v, i) => {
    const x = W - (values.length - 1 - i) * step;
    const y = H - 2 - (v / max) * (H - 4);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  if (pts.length) {
    const first = pts[0].split(',')[0];
    const area = document.createElementNS(SVG, 'polygon');
    area.setAttribute('points', `${first},${H} ${pts.join(' ')} ${W},${H}`);
    area.setAttribute('fill', colour);
    area.setAttribute('fill-opacity', '0.18');
    svg.append(area);
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.length === 1 ? `${W - 2},${pts[0].split(',')[1]} ${pts[0]}` : pts.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', colour);
    line.setAttribute('stroke-width', '1.5');
    svg.append(line);
  }
  const title = document.createElementNS(SVG, 'title');
  const secs = values.length;
  title.textContent = `${label}: now ${values.length ? values[values.length - 1] : 0}, peak ${Math.max(0, ...values)} over the last ${duration(secs)}`;
  svg.append(title);
  return svg;
}

// ---------------------------------------------------------------- instances

const SPARKS = ['connections', 'messages_in_per_sec', 'messages_out_per_sec'];

const FIELDS = [
  ['id', (i, ctx) => el('span', {},
    el('b', { text: i.id }),
    i.id === ctx.answeredBy ? el('span', { class: 'tag', title: 'this instance answered the page', text: 'this' }) : null,
    i.insecure ? el('span', { class: 'tag warn', title: 'runs with --insecure', text: 'insecure' }) : null,
    el('div', { class: 'sub', 'data-field': 'version', text: `v${i.version} · ${i.broker}` }))],
  ['address', (i) => i.address],
  ['uptime_s', (i) => duration(i.uptime_s)],
  ['users', (i) => int(i.users), 'num'],
  ['subscriptions', (i) => int(i.subscriptions), 'num'],
  ['channels', (i) => int(i.channels), 'num'],
  ['messages_totals', (i) => `${int(i.messages_in_total)} / ${int(i.messages_out_total)}`, 'num'],
  ['slow_consumer_disconnects', (i) => int(i.slow_consumer_disconnects), 'num'],
  ['redis_subscriber_connections', (i) => {
    const nodes = Object.values(i.redis_nodes || {});
    const up = nodes.filter((n) => n.connected).length;
    if (i.broker === 'memory') return '–';
    return up === nodes.length ? String(up) : `${up}/${nodes.length} up`;
  }, 'num'],
];

function renderInstances(data) {
  const list = Array.isArray(data && data.instances) ? data.instances : [];
  lastInstances = list;
  answeredBy = data.answered_by || '';
  const ctx = { answeredBy: data.answered_by };
  $('#answered-by').textContent = `${list.length} live · answered by ${data.answered_by}`;
  const freshest = Math.max(0, ...list.map((i) => i.reported_at_ms || 0));

  // Instances joining and leaving, as seen from here.
  const now = new Map(list.map((i) => [i.id, i.address]));
  if (knownInstances) {
    for (const [id, addr] of now) {
      if (!knownInstances.has(id)) dashEvent(id, 'instance joined', `instance ${id} (${addr}) joined the registry`);
    }
    for (const [id, addr] of knownInstances) {
      if (!now.has(id)) dashEvent(id, 'instance left', `instance ${id} (${addr}) left the registry (report expired or withdrawn)`);
    }
  }
  knownInstances = now;

  const tbody = $('#instances tbody');
  const rows = new Map([...tbody.children].map((tr) => [tr.dataset.instance, tr]));
  let prev = null;
  for (const inst of list) {
    const ring = sample(inst);
    let tr = rows.get(inst.id);
    if (!tr) {
      tr = el('tr', { 'data-instance': inst.id });
      for (const [f, , cls] of FIELDS) tr.append(el('td', { 'data-field': f, class: cls }));
      for (const f of SPARKS) tr.append(el('td', { 'data-field': f, class: 'sparkcell' }));
    }
    rows.delete(inst.id);
    for (const [f, fmt] of FIELDS) {
      const td = tr.querySelector(`td[data-field="${f}"]`);
      const v = fmt(inst, ctx);
      if (v instanceof Node) td.replaceChildren(v);
      else if (td.textContent !== String(v)) td.textContent = String(v);
      if (typeof inst[f] === 'number') td.dataset.value = String(inst[f]);
    }
    setSpark(tr, 'connections', ring.conn, '#4e79a7', 'connections', int(inst.connections), inst.connections);
    setSpark(tr, 'messages_in_per_sec', ring.inn, '#59a14f', 'messages in/s', rate(inst.messages_in_per_sec), inst.messages_in_per_sec);
    setSpark(tr, 'messages_out_per_sec', ring.out, '#f28e2b', 'messages out/s', rate(inst.messages_out_per_sec), inst.messages_out_per_sec);
    const lag = freshest - (inst.reported_at_ms || 0);
    tr.classList.toggle('stale', lag > STALE_MS);
    tr.title = lag > STALE_MS ? `no report for ${(lag / 1000).toFixed(1)} s` : `reported ${clock(inst.reported_at_ms)}`;
    tr.dataset.reportedAt = String(inst.reported_at_ms);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (tr !== want) tbody.insertBefore(tr, want);
    prev = tr;
  }
  for (const [id, tr] of rows) {
    tr.remove();
    rings.delete(id);
  }
  if (!list.length) {
    tbody.replaceChildren(el('tr', { class: 'empty' }, el('td', { colspan: FIELDS.length + 3, text: 'No live instance reports.' })));
  } else {
    const empty = tbody.querySelector('tr.empty');
    if (empty) empty.remove();
  }

  // Summary.
  const sum = (f) => list.reduce((a, i) => a + (Number(i[f]) || 0), 0);
  $('#sum-instances').textContent = int(list.length);
  $('#sum-connections').textContent = int(sum('connections'));
  $('#sum-in').textContent = rate(sum('messages_in_per_sec'));
  $('#sum-out').textContent = rate(sum('messages_out_per_sec'));

  // Timeline events from every report.
  for (const inst of list) {
    for (const ev of inst.events || []) {
      // (id, seq) identifies an event; started_at_ms separates restarts of one id.
      const k = `${inst.id}|${inst.started_at_ms}|${ev.seq}`;
      if (events.has(k)) continue;
      events.set(k, { instance: inst.id, seq: ev.seq, at_ms: ev.at_ms, kind: ev.kind, detail: ev.detail, category: category(ev) });
      eventsVersion++;
    }
  }
  trimEvents();
}

function setSpark(tr, field, values, colour, label, now, raw) {
  const td = tr.querySelector(`td[data-field="${field}"]`);
  td.dataset.value = String(raw);
  td.replaceChildren(spark(values, colour, label), el('span', { class: 'sparkval', text: now }));
}

// ---------------------------------------------------------------- timeline

function category(ev) {
  const d = ev.detail || '';
  if (/^slots? moved/.test(d)) return 'slot-move';
  if (/^failover/.test(d)) return 'failover';
  if (/^node added/.test(d)) return 'node-added';
  if (/^node removed/.test(d)) return 'node-removed';
  if (/^slot map read/.test(d)) return 'slot-map';
  if (ev.kind === 'connection' && /\blost\b/.test(d)) return 'connection-lost';
  if (ev.kind === 'connection' && /\bup\b/.test(d)) return 'connection-restored';
  if (ev.kind === 'resubscribe') return 'resubscribe';
  return ev.kind || 'event';
}

const CATEGORY_LABEL = {
  'slot-move': 'slot move',
  failover: 'failover',
  'node-added': 'node added',
  'node-removed': 'node removed',
  'slot-map': 'slot map',
  'connection-lost': 'connection lost',
  'connection-restored': 'connection up',
  resubscribe: 'resubscribed',
  'instance-joined': 'instance joined',
  'instance-left': 'instance left',
};

function dashEvent(instance, label, detail) {
  dashSeq++;
  const cat = label.replace(' ', '-');
  events.set(`dashboard|${dashSeq}`, {
    instance, seq: `d${dashSeq}`, at_ms: Date.now(), kind: 'registry', detail, category: cat, local: true,
  });
  eventsVersion++;
}

function trimEvents() {
  if (events.size <= MAX_EVENTS) return;
  const sorted = [...events.entries()].sort((a, b) => a[1].at_ms - b[1].at_ms);
  for (const [k] of sorted.slice(0, events.size - MAX_EVENTS)) events.delete(k);
}

function renderTimeline() {
  if (eventsRendered === eventsVersion) return;
  eventsRendered = eventsVersion;
  const list = [...events.values()].sort((a, b) => b.at_ms - a.at_ms
    || String(a.instance).localeCompare(String(b.instance))
    || (Number(String(b.seq).replace(/^d/, '')) - Number(String(a.seq).replace(/^d/, ''))));
  const rows = list.slice(0, SHOWN_EVENTS).map((ev) => el('tr', {
    'data-instance': ev.instance,
    'data-seq': ev.seq,
    'data-kind': ev.kind,
    'data-category': ev.category,
    'data-at': ev.at_ms,
    class: `ev ev-${ev.category}${ev.local ? ' local' : ''}`,
  },
  el('td', { class: 'time', text: clockMs(ev.at_ms), title: new Date(ev.at_ms).toISOString() }),
  el('td', { class: 'inst', text: ev.instance }),
  el('td', {}, el('span', { class: `kind k-${ev.category}`, text: CATEGORY_LABEL[ev.category] || ev.kind })),
  el('td', { class: 'detail', text: ev.detail, title: ev.local ? 'seen by this dashboard' : `event #${ev.seq} of ${ev.instance}` })));
  $('#timeline tbody').replaceChildren(...rows);
  $('#timeline-empty').hidden = rows.length > 0;
}

// ---------------------------------------------------------------- cluster

function segments(shards) {
  const ranges = [];
  for (const s of shards) {
    for (const r of s.slots || []) ranges.push({ from: r[0], to: r[1], owner: s.primary });
  }
  ranges.sort((a, b) => a.from - b.from);
  const out = [];
  let next = 0;
  for (const r of ranges) {
    if (r.to < next) continue;
    if (r.from > next) out.push({ from: next, to: r.from - 1, owner: '' });
    const from = Math.max(r.from, next);
    const last = out[out.length - 1];
    if (last && last.owner === r.owner && last.to === from - 1) last.to = r.to;
    else out.push({ from, to: r.to, owner: r.owner });
    next = r.to + 1;
  }
  if (next < SLOTS) out.push({ from: next, to: SLOTS - 1, owner: '' });
  return out;
}

function ownerOfSlot(slot) {
  const s = currentSegments.find((g) => g.from <= slot && slot <= g.to);
  return s ? s.owner : undefined;
}

function healthOf(addr, nodeHealth, cluster) {
  const n = nodeHealth.get(addr);
  const raw = n ? n.health : 'not listed';
  const down = [];
  for (const inst of lastInstances) {
    const r = (inst.redis_nodes || {})[addr];
    if (r && !r.connected) down.push(inst.id);
  }
  const sub = (cluster.subscriber_nodes || {})[addr];
  if (sub && !sub.connected && !down.includes(cluster.answeredBy)) down.push(cluster.answeredBy);
  if (raw === 'failed' || raw === 'fail') return { state: 'failed', why: `the cluster reports it failed` };
  if (down.length) return { state: 'failing', why: `health ${raw}; subscriber connection down from ${down.join(', ')}` };
  if (raw === 'online') return { state: 'ok', why: 'health online' };
  if (raw === 'loading') return { state: 'failing', why: 'health loading (replica syncing)' };
  return { state: 'unknown', why: `health ${raw}` };
}

function badge(h) {
  return el('span', { class: `health h-${h.state}`, 'data-health': h.state, title: h.why, text: h.state });
}

function renderCluster(cluster) {
  lastCluster = cluster;
  const memory = !cluster || cluster.broker !== 'redis-cluster';
  $('#cluster-memory').hidden = !memory;
  $('#cluster-redis').hidden = memory;
  $('#sum-slots-wrap').hidden = memory;
  $('#timeline-empty').textContent = memory ? 'No topology events with the embedded broker.' : 'No events yet.';
  if (memory) {
    $('#cluster-meta').textContent = cluster ? `broker: ${cluster.broker}` : '';
    return;
  }
  cluster.answeredBy = answeredBy;
  const shards = Array.isArray(cluster.shards) ? cluster.shards : [];
  const nodes = Array.isArray(cluster.nodes) ? cluster.nodes : [];
  const nodeHealth = new Map(nodes.map((n) => [n.addr, n]));
  $('#sum-slots').textContent = int(cluster.slots_covered);
  $('#cluster-meta').textContent = `${int(cluster.slots_covered)} / ${int(SLOTS)} slots covered · ${shards.length} shards · subscribing from ${cluster.subscribe_from || '?'} · as ${answeredBy} sees it`;

  // Colours, stable for the page's life: primaries in slot order first.
  const byFirstSlot = [...shards].sort((a, b) => firstSlot(a) - firstSlot(b));
  for (const s of byFirstSlot) colourFor(s.primary);

  // The strip.
  const segs = segments(shards);
  currentSegments = segs;
  const sig = JSON.stringify(segs);
  if (sig !== slotmapSig) {
    slotmapSig = sig;
    const strip = $('#slotmap');
    const marker = strip.querySelector('#slot-marker');
    strip.replaceChildren(...segs.map((g) => {
      const n = g.to - g.from + 1;
      const narrow = n < SLOTS / 400;
      return el('div', {
        class: `seg${g.owner ? '' : ' unassigned'}${narrow ? ' narrow' : ''}`,
        'data-from': g.from,
        'data-to': g.to,
        'data-owner': g.owner,
        title: `slots ${g.from}–${g.to} (${int(n)}) → ${g.owner || 'unassigned'}`,
        style: {
          left: `${(g.from / SLOTS) * 100}%`,
          width: `${(n / SLOTS) * 100}%`,
          background: g.owner ? colourFor(g.owner) : '',
        },
      });
    }));
    if (marker) strip.append(marker);
    strip.dataset.segments = String(segs.length);
  }

  // Primaries with their replicas, health. A node that left the map (failed) stays
  // listed under the shard it was last seen in.
  const inShards = new Set(shards.flatMap((s) => [s.primary, ...(s.replicas || [])]));
  for (const s of shards) {
    const group = [s.primary, ...(s.replicas || [])];
    for (const a of group) shardMemory.set(a, group);
  }
  const orphansOf = new Map(); // primary -> nodes not in the map that were in its shard
  const others = [];
  for (const n of nodes) {
    if (inShards.has(n.addr)) continue;
    const was = (shardMemory.get(n.addr) || []).filter((a) => a !== n.addr);
    const home = shards.find((s) => [s.primary, ...(s.replicas || [])].some((a) => was.includes(a)));
    if (home) {
      if (!orphansOf.has(home.primary)) orphansOf.set(home.primary, []);
      orphansOf.get(home.primary).push(n);
    } else {
      others.push(n);
    }
  }
  const items = byFirstSlot.map((s) => {
    const count = (s.slots || []).reduce((a, r) => a + (r[1] - r[0] + 1), 0);
    const ranges = (s.slots || []).map((r) => (r[0] === r[1] ? `${r[0]}` : `${r[0]}–${r[1]}`));
    const shown = ranges.length > 4 ? `${ranges.slice(0, 4).join(', ')}, … (+${ranges.length - 4})` : ranges.join(', ');
    const reps = (s.replicas || []).map((r) => el('li', { 'data-replica': r },
      el('span', { class: 'role', text: 'replica' }), el('code', { text: r }), badge(healthOf(r, nodeHealth, cluster))));
    for (const n of orphansOf.get(s.primary) || []) {
      reps.push(el('li', { 'data-node': n.addr, 'data-orphan': 'true', class: 'orphan' },
        el('span', { class: 'role', text: n.role === 'primary' ? 'was primary' : n.role }), el('code', { text: n.addr }),
        badge(healthOf(n.addr, nodeHealth, cluster)), el('span', { class: 'hint', text: 'left the slot map' })));
    }
    return el('li', { 'data-primary': s.primary, 'data-slots': count },
      el('div', { class: 'primary' },
        swatch(s.primary),
        el('code', { text: s.primary }),
        badge(healthOf(s.primary, nodeHealth, cluster)),
        el('span', { class: 'slots', title: ranges.join(', '), text: `${int(count)} slots${shown ? ` (${shown})` : ''}` })),
      reps.length ? el('ul', { class: 'replicas' }, reps) : el('div', { class: 'hint', text: 'no replica' }));
  });
  $('#shards').replaceChildren(...items);
  const otherItems = others.map((n) => el('li', { 'data-node': n.addr },
    el('span', { class: 'role', text: n.role }), el('code', { text: n.addr }), badge(healthOf(n.addr, nodeHealth, cluster)),
    el('span', { class: 'hint', text: ' not serving slots' })));
  $('#other-nodes').replaceChildren(...(otherItems.length ? [el('li', { class: 'head', text: 'Other nodes' }), ...otherItems] : []));

  // Channels per Redis node per instance.
  const addrs = new Set([...nodes.map((n) => n.addr), ...shards.flatMap((s) => [s.primary, ...(s.replicas || [])])]);
  for (const inst of lastInstances) for (const a of Object.keys(inst.redis_nodes || {})) addrs.add(a);
  const primaries = new Set(shards.map((s) => s.primary));
  const head = [el('th', { text: 'Redis node' }), ...lastInstances.map((i) => el('th', { class: 'num', 'data-instance': i.id, text: i.id })), el('th', { class: 'num', text: 'total' })];
  $('#node-channels thead tr').replaceChildren(...head);
  const body = [...addrs].sort(addrCompare).map((a) => {
    let total = 0;
    const cells = lastInstances.map((i) => {
      const r = (i.redis_nodes || {})[a];
      if (!r) return el('td', { class: 'num none', 'data-instance': i.id, 'data-channels': 0, text: '·', title: `${i.id} has no subscriber connection to ${a}` });
      const n = Number(r.channels) || 0;
      total += n;
      return el('td', { class: `num${r.connected ? '' : ' down'}`, 'data-instance': i.id, 'data-channels': n, 'data-connected': r.connected ? 'true' : 'false', title: `${i.id}: ${n} channels on ${a}${r.connected ? '' : ' (subscriber connection down)'}` },
        r.connected ? null : el('span', { class: 'disc', text: '✕ ' }), int(n));
    });
    const role = primaries.has(a) ? 'primary' : (nodeHealth.get(a) || {}).role || 'replica';
    return el('tr', { 'data-node': a },
      el('td', {}, primaries.has(a) ? swatch(a) : el('span', { class: 'swatch blank' }), el('code', { text: a }), el('span', { class: 'role', text: ` ${role}` })),
      ...cells, el('td', { class: 'num total', text: int(total) }));
  });
  $('#node-channels tbody').replaceChildren(...body);

  checkLookupStale();
}

function firstSlot(s) {
  return Math.min(SLOTS, ...(s.slots || []).map((r) => r[0]));
}

function addrCompare(a, b) {
  const pa = a.split(':');
  const pb = b.split(':');
  return pa[0].localeCompare(pb[0], 'en', { numeric: true }) || Number(pa[1]) - Number(pb[1]);
}

// ---------------------------------------------------------------- lookup

$('#lookup-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('#lookup-name').value.trim();
  const out = $('#lookup-result');
  if (!name) return;
  const gen = generation;
  out.hidden = false;
  out.classList.add('busy');
  try {
    const r = await api(`/api/channel?name=${encodeURIComponent(name)}`);
    if (gen !== generation) return;
    renderLookup(r);
  } catch (e) {
    if (gen !== generation) return;
    if (e instanceof Unauthorized) {
      showLogin(refusedMessage(e.message));
      return;
    }
    lookupShown = null;
    for (const a of ['data-owner', 'data-slot', 'data-instances-holding']) out.removeAttribute(a);
    out.dataset.channel = name;
    out.dataset.error = e.message;
    out.replaceChildren(el('p', { class: 'error', text: `Lookup of “${name}” failed: ${e.message}` }));
    const m = $('#slot-marker');
    if (m) m.remove();
  } finally {
    out.classList.remove('busy');
  }
});

function renderLookup(r) {
  lookupShown = r;
  const out = $('#lookup-result');
  out.hidden = false;
  out.removeAttribute('data-error');
  out.dataset.channel = r.channel;
  out.dataset.slot = String(r.slot);
  out.dataset.owner = r.owner || '';
  out.dataset.instancesHolding = r.instances_holding === undefined ? '' : String(r.instances_holding);
  const rows = [
    ['channel', el('code', { text: r.channel })],
    ['namespace', r.namespace ? el('code', { text: r.namespace }) : '(default)'],
    ['slot', String(r.slot)],
    ['owner', r.owner
      ? el('span', { 'data-field': 'owner' }, swatch(r.owner), el('code', { text: r.owner }))
      : (lastCluster && lastCluster.broker === 'memory' ? 'none (embedded broker, no Redis)' : 'not known to this instance (no primary serves the slot now)')],
  ];
  if (r.replicas) rows.push(['replicas', r.replicas.length ? r.replicas.join(', ') : 'none']);
  if (r.instances_holding !== undefined) rows.push(['instances holding it', String(r.instances_holding)]);
  if (r.instances_holding_error) rows.push(['instances holding it', el('span', { class: 'error', text: r.instances_holding_error })]);
  rows.push([`local subscribers on ${r.instance}`, String(r.local_subscribers)]);
  if (r.history) {
    rows.push(['history', r.history.error
      ? el('span', { class: 'error', text: r.history.error })
      : `offset ${r.history.offset}, epoch ${r.history.epoch || '(none yet)'}`]);
  }
  if (r.presence) {
    rows.push(['presence', r.presence.error
      ? el('span', { class: 'error', text: r.presence.error })
      : `${r.presence.clients} clients, ${r.presence.users} users`]);
  }
  const dl = el('dl', {}, rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { 'data-key': k }, v)]));
  out.replaceChildren(dl, el('p', { id: 'lookup-stale', class: 'warn', hidden: true }), el('p', { class: 'hint', text: `answered by ${r.instance} at ${clock(Date.now())}` }));

  // Mark the slot on the strip.
  const strip = $('#slotmap');
  let m = $('#slot-marker');
  if (!m) {
    m = el('div', { id: 'slot-marker' });
    strip.append(m);
  }
  m.dataset.slot = String(r.slot);
  m.style.left = `${((r.slot + 0.5) / SLOTS) * 100}%`;
  m.title = `${r.channel}: slot ${r.slot}`;
  checkLookupStale();
}

function checkLookupStale() {
  const p = $('#lookup-stale');
  if (!p || !lookupShown || !lookupShown.owner) return;
  const now = ownerOfSlot(lookupShown.slot);
  const stale = now !== undefined && now !== lookupShown.owner;
  p.hidden = !stale;
  p.textContent = stale ? `The slot map now shows slot ${lookupShown.slot} on ${now || 'no node'}: look it up again.` : '';
}

// ---------------------------------------------------------------- start

if (key) {
  showDashboard();
  startPolling();
} else {
  showLogin('');
}
