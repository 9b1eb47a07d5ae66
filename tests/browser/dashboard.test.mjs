// The operator's dashboard (/dashboard) in headless Chromium, against three shardcast
// instances on a real local Redis Cluster. Asserts on the DOM (data attributes), not
// on pixels. Run with ./run-tests.sh (checks the prerequisites first).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';

import puppeteer from 'puppeteer-core';

import {
  ADMIN_KEY, CHROMIUM_BIN, Client, Cluster, Instance, checkPrerequisites, freePort, repo, sleep, tmpdir,
} from './harness.mjs';

const IDS = ['shardcast-1', 'shardcast-2', 'shardcast-3'];
// channel -> indexes of the instances with a subscriber to it
const SUBSCRIPTIONS = {
  'chat:lobby': [0, 1, 2],
  'news:sports': [0, 1],
  'room:42': [2],
  'game:7': [0],
  'alerts:ops': [1, 2],
};
const MOVED = 'chat:lobby'; // the channel whose slot is migrated
const KEEP = process.env.SHARDCAST_TEST_KEEP === '1'; // keep the temp dir and its logs

const dir = tmpdir('shardcast-dashboard-');
// Screenshots go to docs/img only when asked (SHARDCAST_SCREENSHOTS=1), so a test run
// leaves the checkout clean.
const IMG = process.env.SHARDCAST_SCREENSHOTS === '1' ? path.join(repo, 'docs/img') : dir;
const cluster = new Cluster(path.join(dir, 'cluster'));
const instances = [];
const clients = [];
let browser;
let page;
let publisher;
let slot;
let target; // the primary the slot moves to
const t0 = Date.now();
const since = () => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const log = (...a) => console.log(`[${since()}]`, ...a);

function cleanupSync() {
  clearInterval(publisher);
  for (const c of clients) c.close();
  for (const i of instances) i.kill('SIGKILL');
  cluster.stopSync();
  if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
}
process.once('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    cleanupSync();
    process.exit(130);
  });
}

async function publish(inst, channel, data) {
  try {
    await fetch(`${inst.url}/api/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channel, data }),
    });
  } catch {
    /* an instance being killed; the next one goes elsewhere */
  }
}

/** The owner the strip shows for `s` ('' unassigned, null: no segment). */
function stripOwner(s) {
  return page.evaluate((slot) => {
    const seg = [...document.querySelectorAll('#slotmap .seg')]
      .find((e) => Number(e.dataset.from) <= slot && slot <= Number(e.dataset.to));
    return seg ? seg.dataset.owner : null;
  }, s);
}

before(async () => {
  checkPrerequisites();
  fs.mkdirSync(IMG, { recursive: true });
  const seeds = await cluster.start();
  log(`Redis Cluster up on ${cluster.base}..${cluster.base + 5}`);
  for (const id of IDS) instances.push(new Instance({ id, port: await freePort(), seeds, dir }));
  for (const i of instances) i.start();
  await Promise.all(instances.map((i) => i.ready()));
  log(`instances ready: ${instances.map((i) => `${i.id}@${i.port}`).join(', ')}`);

  for (const [channel, on] of Object.entries(SUBSCRIPTIONS)) {
    for (const n of on) {
      const c = new Client(instances[n].port, `u${clients.length}`);
      c.instance = n;
      c.channel = channel;
      await c.open();
      await c.subscribe(channel);
      clients.push(c);
    }
  }
  log(`${clients.length} WebSocket clients subscribed`);
  // Some traffic, for the rates and sparklines.
  let n = 0;
  publisher = setInterval(() => {
    const live = instances.filter((i) => i.alive());
    const inst = live[n % live.length];
    const channel = Object.keys(SUBSCRIPTIONS)[n % Object.keys(SUBSCRIPTIONS).length];
    n++;
    publish(inst, channel, { n });
  }, 50);

  browser = await puppeteer.launch({
    executablePath: CHROMIUM_BIN,
    headless: true,
    userDataDir: path.join(dir, 'chromium-profile'),
    args: [
      '--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
  });
  page = await browser.newPage();
  await page.setViewport({ width: 1500, height: 1000 });
  page.on('pageerror', (e) => {
    console.error(`page error: ${e.message}`);
    pageErrors.push(e.message);
  });
});
const pageErrors = [];

after(async () => {
  clearInterval(publisher);
  if (browser) await browser.close().catch(() => {});
  for (const c of clients) c.close();
  await Promise.all(instances.map((i) => i.stop()));
  await cluster.stop().catch((e) => console.error(`cluster/stop.sh: ${e.message}`));
  if (KEEP) log(`kept ${dir} (instance logs)`);
  else fs.rmSync(dir, { recursive: true, force: true });
  log('cleaned up');
});

test('the API and the page refuse a wrong or missing key', async () => {
  const url = instances[0].url;
  for (const headers of [{}, { 'X-API-Key': 'not-the-key' }]) {
    const r = await fetch(`${url}/api/instances`, { headers });
    assert.equal(r.status, 401, `GET /api/instances with ${JSON.stringify(headers)}`);
    assert.match(r.headers.get('content-type') || '', /application\/json/);
    const body = await r.json();
    assert.equal(body.error.code, 'unauthorized');
  }
  for (const p of ['/api/cluster', `/api/channel?name=${encodeURIComponent(MOVED)}`]) {
    assert.equal((await fetch(`${url}${p}`)).status, 401, `${p} without a key`);
  }

  let t = Date.now();
  await page.goto(`${url}/dashboard`, { waitUntil: 'load' });
  log(`page loaded in ${Date.now() - t} ms`);
  // Nothing but the login without a key.
  await page.waitForSelector('#login-form', { visible: true });
  assert.equal(await page.$eval('#dashboard', (e) => e.hidden), true, 'dashboard hidden without a key');
  assert.equal(await page.$$eval('#instances tr[data-instance]', (r) => r.length), 0);

  // Wrong key.
  t = Date.now();
  await page.type('#key', 'not-the-key');
  await page.click('#login-submit');
  await page.waitForSelector('#login-error', { visible: true });
  let msg = await page.$eval('#login-error', (e) => e.textContent);
  assert.match(msg, /wrong or missing key/i);
  log(`wrong key refused on the page ${Date.now() - t} ms after typing it`);
  assert.match(msg, /wrong API key/, 'the server\'s reason is shown');
  assert.equal(await page.$eval('#dashboard', (e) => e.hidden), true, 'no dashboard with a wrong key');
  assert.equal(await page.$$eval('#instances tr[data-instance]', (r) => r.length), 0, 'no data with a wrong key');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, 'a wrong key is not kept');

  // Missing key.
  await page.$eval('#key', (e) => { e.value = ''; });
  await page.$eval('#login-error', (e) => { e.textContent = ''; e.hidden = true; });
  await page.click('#login-submit');
  await page.waitForSelector('#login-error', { visible: true });
  msg = await page.$eval('#login-error', (e) => e.textContent);
  assert.match(msg, /wrong or missing key/i);
  assert.equal(await page.$eval('#dashboard', (e) => e.hidden), true, 'no dashboard without a key');
  log('wrong and missing keys refused');
});

test('with the right key the dashboard lists the three instances', async () => {
  const t = Date.now();
  await page.type('#key', ADMIN_KEY);
  await page.click('#login-submit');
  await page.waitForFunction(
    (n) => document.querySelectorAll('#instances tbody tr[data-instance]').length === n,
    { polling: 100, timeout: 10_000 },
    IDS.length,
  );
  log(`3 instances listed ${Date.now() - t} ms after login`);
  const ids = await page.$$eval('#instances tbody tr[data-instance]', (rows) => rows.map((r) => r.dataset.instance));
  assert.deepEqual(ids.sort(), [...IDS].sort());
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, 'the key is kept in sessionStorage');
  assert.equal(await page.$eval('#login', (e) => e.hidden), true);

  // The strip covers every slot with the cluster's primaries.
  const primaries = await cluster.primaries();
  await page.waitForSelector('#slotmap .seg[data-owner]');
  const segs = await page.$$eval('#slotmap .seg', (s) => s.map((e) => ({ from: +e.dataset.from, to: +e.dataset.to, owner: e.dataset.owner })));
  assert.equal(segs[0].from, 0);
  assert.equal(segs[segs.length - 1].to, 16383);
  for (let i = 1; i < segs.length; i++) assert.equal(segs[i].from, segs[i - 1].to + 1, 'contiguous segments');
  assert.deepEqual([...new Set(segs.map((s) => s.owner))].sort(), primaries.map((p) => p.addr).sort());
  for (const p of primaries) {
    for (const [a, b] of p.slots) {
      assert.equal(await stripOwner(a), p.addr, `slot ${a}`);
      assert.equal(await stripOwner(b), p.addr, `slot ${b}`);
    }
  }
  // Each primary listed with its replica and health.
  const shards = await page.$$eval('#shards > li[data-primary]', (l) => l.map((e) => ({
    primary: e.dataset.primary,
    health: e.querySelector('.primary .health').dataset.health,
    replicas: [...e.querySelectorAll('li[data-replica]')].map((r) => r.dataset.replica),
  })));
  assert.equal(shards.length, 3);
  for (const s of shards) {
    assert.equal(s.health, 'ok', `${s.primary} health`);
    assert.equal(s.replicas.length, 1, `${s.primary} has its replica listed`);
  }

  // Channels per Redis node per instance add up to what each instance subscribed.
  // (Every connection also holds its user's personal channel, user:<id>.)
  const want = IDS.map((_, n) => Object.values(SUBSCRIPTIONS).filter((on) => on.includes(n)).length
    + new Set(clients.filter((c) => c.instance === n).map((c) => c.user)).size);
  const perNode = () => page.evaluate((ids) => ids.map((id) => ({
    table: [...document.querySelectorAll(`#node-channels tbody td[data-instance="${id}"]`)]
      .reduce((a, c) => a + Number(c.dataset.channels || 0), 0),
    reported: Number(document.querySelector(`#instances tr[data-instance="${id}"] td[data-field="channels"]`)?.dataset.value),
  })), IDS);
  const deadline = Date.now() + 10_000;
  let got;
  for (;;) {
    got = await perNode();
    if (got.every((g, n) => g.table === want[n] && g.reported === want[n])) break;
    if (Date.now() > deadline) {
      assert.fail(`channels per Redis node by instance: want ${JSON.stringify(want)}, table/reported ${JSON.stringify(got)}`);
    }
    await sleep(200);
  }
  // The figures: connections per instance.
  const conns = await page.$$eval('#instances tbody tr[data-instance]', (rows) => Object.fromEntries(rows.map((r) => [r.dataset.instance, Number(r.querySelector('td[data-field="connections"]').dataset.value)])));
  IDS.forEach((id, n) => assert.equal(conns[id], clients.filter((c) => c.instance === n).length, `${id} connections`));
  log('slot map, health, per-node channels and connection counts match');
});

test('a migrated slot shows its new owner and the move in the timeline', async () => {
  slot = await cluster.keyslot(MOVED);
  const from = await cluster.ownerOf(slot);
  target = (await cluster.primaries()).find((p) => p.addr !== from.addr);
  assert.equal(await stripOwner(slot), from.addr, 'the strip shows the owner before the move');
  const before = Object.fromEntries(clients.filter((c) => c.channel === MOVED).map((c) => [c.user, c.count(MOVED)]));

  const tm = Date.now();
  await cluster.migrateSlot(slot, target.port);
  const migrated = Date.now();
  log(`slot ${slot} (${MOVED}) migrated ${from.addr} -> ${target.addr} by cluster/migrate-slot.sh in ${migrated - tm} ms`);

  await page.waitForFunction((slot, owner) => {
    const seg = [...document.querySelectorAll('#slotmap .seg')]
      .find((e) => Number(e.dataset.from) <= slot && slot <= Number(e.dataset.to));
    return seg && seg.dataset.owner === owner;
  }, { polling: 100, timeout: 5000 }, slot, target.addr);
  const stripAt = Date.now();
  log(`slot map shows the new owner ${stripAt - migrated} ms after the migration`);
  const seg = await page.evaluate((slot) => {
    const e = [...document.querySelectorAll('#slotmap .seg')].find((x) => +x.dataset.from <= slot && slot <= +x.dataset.to);
    return { from: +e.dataset.from, to: +e.dataset.to };
  }, slot);
  assert.deepEqual(seg, { from: slot, to: slot }, 'the moved slot is a segment of its own');

  const moveText = `slots moved: 1 from ${from.addr} to ${target.addr}`;
  await page.waitForFunction((text) => [...document.querySelectorAll('#timeline tr[data-category="slot-move"]')]
    .some((r) => r.textContent.includes(text)), { polling: 100, timeout: 5000 }, moveText);
  log(`timeline shows "${moveText}" ${Date.now() - migrated} ms after the migration`);
  // Every instance saw it (one row each), within a generous deadline.
  await page.waitForFunction((text, n) => new Set([...document.querySelectorAll('#timeline tr[data-category="slot-move"]')]
    .filter((r) => r.textContent.includes(text)).map((r) => r.dataset.instance)).size === n,
  { polling: 100, timeout: 10_000 }, moveText, IDS.length);
  log(`all ${IDS.length} instances reported the move ${Date.now() - migrated} ms after the migration`);

  // Newest first, no repeats.
  const rows = await page.$$eval('#timeline tbody tr', (r) => r.map((e) => ({ at: +e.dataset.at, key: `${e.dataset.instance}#${e.dataset.seq}` })));
  for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1].at >= rows[i].at, 'timeline newest first');
  assert.equal(new Set(rows.map((r) => r.key)).size, rows.length, 'no duplicate (instance, seq)');

  // The subscribers of the moved channel still get its messages (via the new owner).
  const deadline = Date.now() + 10_000;
  for (;;) {
    await publish(instances[0], MOVED, { after: 'move' });
    const behind = clients.filter((c) => c.channel === MOVED && c.count(MOVED) <= before[c.user]);
    if (!behind.length) break;
    if (Date.now() > deadline) assert.fail(`no message on ${MOVED} after the move for ${behind.map((c) => c.user).join(', ')}`);
    await sleep(200);
  }
  log(`every subscriber of ${MOVED} receives again ${Date.now() - migrated} ms after the migration`);
});

test('the channel lookup shows the new owner', async () => {
  await page.$eval('#lookup-name', (e) => { e.value = ''; });
  await page.type('#lookup-name', MOVED);
  await page.click('#lookup-submit');
  await page.waitForFunction((ch) => document.querySelector('#lookup-result')?.dataset.channel === ch && !document.querySelector('#lookup-result').hidden, { polling: 100, timeout: 5000 }, MOVED);
  const r = await page.$eval('#lookup-result', (e) => ({ ...e.dataset, text: e.textContent }));
  assert.equal(r.owner, target.addr, 'lookup owner');
  assert.equal(Number(r.slot), slot);
  assert.equal(Number(r.instancesHolding), SUBSCRIPTIONS[MOVED].length, 'instances holding it');
  assert.match(r.text, /local subscribers on shardcast-1\s*1/);
  assert.equal(await page.$eval('#slot-marker', (e) => Number(e.dataset.slot)), slot, 'the slot is marked on the strip');

  // An invalid name is reported, not thrown.
  await page.$eval('#lookup-name', (e) => { e.value = ''; });
  await page.type('#lookup-name', 'bad name with spaces');
  await page.click('#lookup-submit');
  await page.waitForFunction(() => document.querySelector('#lookup-result')?.dataset.error, { polling: 100, timeout: 5000 });
  // Back to the moved channel for the screenshot.
  await page.$eval('#lookup-name', (e) => { e.value = ''; });
  await page.type('#lookup-name', MOVED);
  await page.click('#lookup-submit');
  await page.waitForFunction((o) => document.querySelector('#lookup-result')?.dataset.owner === o, { polling: 100, timeout: 5000 }, target.addr);
  log(`lookup of ${MOVED}: slot ${slot}, owner ${r.owner}, ${r.instancesHolding} instances holding it`);

  await sleep(6000); // more samples in the sparklines for the screenshot
  const shot = path.join(IMG, 'dashboard.png');
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot ${path.relative(repo, shot)}`);
});

test('a killed instance disappears from the list within the TTL', async () => {
  const victim = instances[2];
  const t = Date.now();
  victim.kill('SIGKILL');
  await victim.exited;
  await page.waitForFunction((id) => !document.querySelector(`#instances tbody tr[data-instance="${id}"]`), { polling: 100, timeout: 15_000 }, victim.id);
  const took = Date.now() - t;
  log(`${victim.id} (SIGKILL) gone from the dashboard after ${took} ms (instance TTL 3 s)`);
  assert.equal(await page.$$eval('#instances tbody tr[data-instance]', (r) => r.length), 2);
  await page.waitForSelector(`#timeline tr[data-category="instance-left"][data-instance="${victim.id}"]`, { timeout: 3000 });
  const shot = path.join(IMG, 'dashboard-instance-killed.png');
  await page.screenshot({ path: shot, fullPage: true });
  log(`screenshot ${path.relative(repo, shot)}`);
  assert.deepEqual(pageErrors, [], 'no script errors on the page');
});
