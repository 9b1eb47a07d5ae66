// Redis Cluster failover under a client on history channels: every acknowledged publication
// arrives exactly once, in order, through (1) the failover of the channel's primary and
// (2) a failover that happens while the client is resuming (subscribe answered `unavailable`,
// retried with backoff, on another instance).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Shardcast } from "../dist/index.js";
import { REPO, apiPublish, next, sleep, startServer, tcpProxy, trackedWebSocket, waitFor } from "./helpers.mjs";

const CLUSTER_BIN = process.env.SHARDCAST_CLUSTER_BIN || join(REPO, "target/debug/shardcast-cluster");
const env = { ...process.env, SHARDCAST_CLUSTER_BIN: CLUSTER_BIN };
const dir = mkdtempSync(join(tmpdir(), "shardcast-js-cluster-"));
let base;
let seeds;
const instances = [];

function portFree(port) {
  return new Promise((res) => {
    const s = net.createServer();
    s.once("error", () => res(false));
    s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
  });
}

/** A base port with base..base+5 and their bus ports (+10000) free, below 32768. */
async function freeBase() {
  for (let i = 0; i < 50; i++) {
    const b = 17000 + Math.floor(Math.random() * 500) * 10;
    let ok = true;
    for (let k = 0; k < 6 && ok; k++) ok = (await portFree(b + k)) && (await portFree(b + 10000 + k));
    if (ok) return b;
  }
  throw new Error("no free port range for the cluster");
}

const cli = (port, ...args) => execFileSync("redis-cli", ["-p", String(port), ...args], { encoding: "utf8" }).trim();

/** The master that owns `channel`'s slot, as `port` sees the cluster. */
function owner(port, channel) {
  const slot = Number(cli(port, "CLUSTER", "KEYSLOT", channel));
  for (const line of cli(port, "CLUSTER", "NODES").split("\n")) {
    const [, addr, flags, , , , , state, ...slots] = line.split(" ");
    if (!flags.includes("master") || flags.includes("fail") || state !== "connected") continue;
    for (const range of slots) {
      if (range.startsWith("[")) continue;
      const [lo, hi = lo] = range.split("-").map(Number);
      if (slot >= lo && slot <= hi) return Number(addr.split(":")[1].split("@")[0]);
    }
  }
  return null;
}

const dead = new Set();
/** A node that is still running. */
const live = () => [0, 1, 2, 3, 4, 5].map((k) => base + k).find((p) => !dead.has(p));

const pidOf = (port) => Number(readFileSync(join(dir, String(port), "redis.pid"), "utf8"));

/** The replica of the master on `port`. */
function replicaOf(port) {
  const nodes = cli(live(), "CLUSTER", "NODES").split("\n").map((l) => l.split(" "));
  const id = nodes.find((n) => n[1].startsWith(`127.0.0.1:${port}@`))[0];
  return Number(nodes.find((n) => n[3] === id)[1].split(":")[1].split("@")[0]);
}

/**
 * Kills the master of `channel` by its PID and waits until a replica took its slots.
 * `stallMs`: the replica is stopped (SIGSTOP) that long first, so the failover takes longer
 * than the server's 5 s subscribe confirmation.
 */
async function failover(channel, stallMs = 0) {
  const primary = owner(live(), channel);
  const replica = stallMs ? pidOf(replicaOf(primary)) : 0;
  if (replica) process.kill(replica, "SIGSTOP");
  process.kill(pidOf(primary), "SIGKILL");
  dead.add(primary);
  if (replica) {
    await sleep(stallMs);
    process.kill(replica, "SIGCONT");
  }
  const watcher = live();
  const t0 = Date.now();
  const promoted = await waitFor(
    () => {
      try {
        const o = owner(watcher, channel);
        return o && o !== primary ? o : null;
      } catch {
        return null;
      }
    },
    { timeout: 30000, interval: 100, what: `a replica to take over ${channel}` },
  );
  return { primary, promoted, ms: Date.now() - t0 };
}

before(async () => {
  base = await freeBase();
  seeds = execFileSync(join(REPO, "cluster/start.sh"), ["--base-port", String(base), "--dir", dir], {
    encoding: "utf8",
    env,
    stdio: ["ignore", "pipe", "inherit"],
  }).trim();
  assert.match(seeds, /^redis:\/\//);
  const args = [
    "--broker",
    "redis-cluster",
    "--redis-nodes",
    seeds,
    "--insecure",
    "--client-publish",
    "authenticated",
    "--history",
    "chat:100000:600s",
    "--worker-threads",
    "1",
  ];
  for (let i = 0; i < 3; i++) instances.push(await startServer(args, { name: `instance${i}` }));
  for (const s of instances) {
    await waitFor(async () => (await fetch(`${s.http}/readyz`)).ok, { timeout: 20000, what: "readyz" });
  }
});

after(async () => {
  for (const s of instances) await s.stop();
  try {
    execFileSync(join(REPO, "cluster/stop.sh"), ["--dir", dir], { env, stdio: "ignore" });
  } catch {}
});

/** Publishes {n} to `channel` through `srv` until stopped; remembers what was acknowledged. */
function publisher(srv, channel) {
  const acked = new Map(); // offset -> n
  let n = 0;
  let running = true;
  let failures = 0;
  const done = (async () => {
    while (running) {
      const mine = ++n;
      try {
        const r = await apiPublish(srv, channel, { n: mine }, { raw: true });
        if (r.status === 200) acked.set(r.body.offset, mine);
        else failures++;
      } catch {
        failures++;
      }
      await sleep(5);
    }
  })();
  return {
    acked,
    get failures() {
      return failures;
    },
    get count() {
      return acked.size;
    },
    async stop() {
      running = false;
      await done;
    },
  };
}

/** Every acknowledged publication exactly once, in order. */
function assertComplete(name, received, acked) {
  const offsets = received.map((p) => p.offset);
  for (let i = 1; i < offsets.length; i++) {
    assert.ok(offsets[i] > offsets[i - 1], `${name}: offset ${offsets[i]} after ${offsets[i - 1]} (repeat or disorder)`);
  }
  const byOffset = new Map(received.map((p) => [p.offset, p.data.n]));
  let lost = 0;
  for (const [offset, n] of acked) if (byOffset.get(offset) !== n) lost++;
  assert.equal(lost, 0, `${name}: ${lost} of ${acked.size} acknowledged publications lost`);
}

/** A channel name whose slot lives on another master than `other`'s. */
function channelOnAnotherShard(other) {
  const o = owner(live(), other);
  for (let i = 0; ; i++) {
    const c = `chat:fo-b${i}`;
    if (owner(live(), c) !== o) return c;
  }
}

test("Redis Cluster failover: 0 lost, 0 duplicated, also when the primary dies during a resume", async (t) => {
  const t0 = Date.now();
  const ch1 = "chat:fo-a";
  const ch2 = channelOnAnotherShard(ch1);
  const [pubSrv, clientSrv, otherSrv] = instances;
  const proxy = await tcpProxy(clientSrv.port);
  t.after(() => proxy.close());
  const WS = trackedWebSocket();
  const client = new Shardcast(`ws://127.0.0.1:${proxy.port}/ws?user=alice`, {
    WebSocket: WS,
    minReconnectDelay: 200,
    maxReconnectDelay: 1000,
  });
  t.after(() => client.disconnect());
  const received = { [ch1]: [], [ch2]: [] };
  const events = { [ch1]: [], [ch2]: [] };
  const subs = [ch1, ch2].map((ch) => {
    const sub = client.subscribe(ch, { recover: true });
    sub.on("publication", (p) => received[ch].push(p));
    for (const ev of ["subscribing", "subscribed", "unrecovered", "error", "unsubscribed"]) {
      sub.on(ev, (e) => events[ch].push({ ev, code: e.code, recovered: e.recovered, at: Date.now() - t0 }));
    }
    return sub;
  });
  client.connect();
  await waitFor(() => subs.every((s) => s.state === "subscribed"), { timeout: 15000, what: "subscribed" });

  const p1 = publisher(pubSrv, ch1);
  const p2 = publisher(pubSrv, ch2);
  t.after(() => Promise.all([p1.stop(), p2.stop()]));
  await waitFor(() => p1.count > 50 && p2.count > 50, { timeout: 15000, what: "publications flowing" });

  // (1) The primary of ch1 dies; its replica is promoted.
  const f1 = await failover(ch1);
  t.diagnostic(`ch1 ${ch1}: primary ${f1.primary} killed, ${f1.promoted} promoted after ${f1.ms} ms`);
  const before1 = p1.count;
  await waitFor(() => p1.count > before1 + 50, { timeout: 20000, what: "ch1 publishing again" });

  // (2) The client loses its connection, and ch2's primary dies while it resumes — on another
  // instance (the proxy now leads there).
  t.diagnostic(`resume starts at ${Date.now() - t0} ms`);
  proxy.target = otherSrv.port;
  WS.last().terminate();
  const f2 = await failover(ch2, 7000);
  t.diagnostic(`ch2 ${ch2}: primary ${f2.primary} killed, ${f2.promoted} promoted after ${f2.ms} ms`);
  const before2 = p2.count;
  await waitFor(() => p2.count > before2 + 50, { timeout: 20000, what: "ch2 publishing again" });
  await waitFor(() => subs[1].state === "subscribed", { timeout: 30000, what: "ch2 resumed" });

  await Promise.all([p1.stop(), p2.stop()]);
  const last1 = Math.max(...p1.acked.keys());
  const last2 = Math.max(...p2.acked.keys());
  await waitFor(
    () => received[ch1].at(-1)?.offset >= last1 && received[ch2].at(-1)?.offset >= last2,
    { timeout: 30000, what: "the client to catch up" },
  );
  await sleep(300);
  t.diagnostic(
    `ch1: ${p1.count} acked (${p1.failures} refused), ${received[ch1].length} received; ` +
      `ch2: ${p2.count} acked (${p2.failures} refused), ${received[ch2].length} received`,
  );
  t.diagnostic(`ch2 events: ${JSON.stringify(events[ch2])}`);
  assertComplete(ch1, received[ch1], p1.acked);
  assertComplete(ch2, received[ch2], p2.acked);
  assert.ok(p1.failures > 0 && p2.failures > 0, "the failovers were felt by the publisher");
  // ch2's resume: at least one subscribe refused as `unavailable`, then a recovered resume.
  assert.ok(
    events[ch2].some((e) => e.ev === "error" && e.code === "unavailable"),
    "the resume met the failover (a subscribe answered `unavailable`)",
  );
  const resumed = events[ch2].filter((e) => e.ev === "subscribed");
  assert.equal(resumed.at(-1).recovered, true);
  assert.ok(!events[ch1].some((e) => e.ev === "unrecovered") && !events[ch2].some((e) => e.ev === "unrecovered"));
  assert.ok(!events[ch1].some((e) => e.ev === "unsubscribed") && !events[ch2].some((e) => e.ev === "unsubscribed"));
});
