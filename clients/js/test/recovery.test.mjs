// History recovery across the client's reconnects: no gap, no repeat; recovered:false after trimming.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { Shardcast } from "../dist/index.js";
import { apiPublish, next, sleep, startServer, tcpProxy, trackedWebSocket, waitFor } from "./helpers.mjs";

let srv;
before(async () => {
  srv = await startServer([
    "--insecure",
    "--client-publish",
    "authenticated",
    "--history",
    "chat:100000:600s,short:10:600s",
  ]);
});
after(async () => {
  await srv.stop();
});

/** Publishes `count` publications through the HTTP API with `workers` in parallel; returns offset -> n. */
async function publishMany(channel, count, workers = 4) {
  const acked = new Map();
  let n = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (n < count) {
        const mine = ++n;
        const r = await apiPublish(srv, channel, { n: mine });
        acked.set(r.offset, mine);
      }
    }),
  );
  return acked;
}

test("0 lost, 0 duplicated over 2000 publications while the connection is cut again and again", async (t) => {
  const proxy = await tcpProxy(srv.port);
  t.after(() => proxy.close());
  const WS = trackedWebSocket();
  const client = new Shardcast(`ws://127.0.0.1:${proxy.port}/ws?user=alice`, {
    WebSocket: WS,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
  });
  t.after(() => client.disconnect());
  const sub = client.subscribe("chat:recovery", { recover: true });
  const offsets = [];
  const data = new Map();
  const resumes = [];
  const unrecovered = [];
  sub.on("publication", (p) => {
    offsets.push(p.offset);
    data.set(p.offset, p.data.n);
  });
  sub.on("subscribed", (e) => resumes.push(e));
  sub.on("unrecovered", (e) => unrecovered.push(e));
  client.connect();
  await next(sub, "subscribed");

  let cuts = 0;
  let publishing = true;
  const cutter = (async () => {
    while (publishing) {
      await sleep(150 + Math.random() * 150);
      if (!publishing) break;
      // Alternate: a reset from the network (proxy) and an abrupt close of the client's own socket.
      if (cuts % 2 === 0) proxy.cut();
      else WS.last()?.terminate();
      cuts++;
    }
  })();
  t.after(() => {
    publishing = false;
  });
  const acked = await publishMany("chat:recovery", 2000);
  publishing = false;
  await cutter;
  await waitFor(() => offsets.length >= 2000, { timeout: 20000, what: "2000 publications" });
  await sleep(200); // anything extra (a repeat) would show up now

  t.diagnostic(`connection cut ${cuts} times, ${resumes.length - 1} resumes`);
  assert.ok(cuts >= 3, `the connection was cut ${cuts} times`);
  assert.ok(resumes.length >= 3, `resubscribed ${resumes.length - 1} times`);
  for (const r of resumes.slice(1)) assert.equal(r.recovered, true, "every resume recovered");
  assert.deepEqual(unrecovered, []);
  assert.equal(offsets.length, 2000, "no repeats");
  assert.deepEqual(
    offsets,
    Array.from({ length: 2000 }, (_, i) => i + 1),
    "offsets 1..2000 exactly once, in order",
  );
  for (const [offset, n] of acked) assert.equal(data.get(offset), n, `offset ${offset} carries its data`);
  client.disconnect();
  await proxy.close();
});

test("recovered:false after the history was trimmed fires `unrecovered`, then live messages continue", async (t) => {
  const client = new Shardcast(srv.ws("bob"), { WebSocket, minReconnectDelay: 50, maxReconnectDelay: 100 });
  t.after(() => client.disconnect());
  const sub = client.subscribe("short:trim");
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  client.connect();
  await next(sub, "subscribed");
  for (let i = 0; i < 3; i++) await apiPublish(srv, "short:trim", i);
  await waitFor(() => got.length === 3);
  client.disconnect();
  assert.equal(sub.state, "subscribing");
  // 30 more while away: max_len 10 keeps only 24..33.
  for (let i = 0; i < 30; i++) await apiPublish(srv, "short:trim", i);
  const unrecovered = next(sub, "unrecovered");
  const subscribed = next(sub, "subscribed");
  client.connect();
  const u = await unrecovered;
  assert.equal(u.reason, "not_recovered");
  assert.equal(u.since.offset, 3);
  assert.equal(u.offset, 33);
  assert.equal(u.epoch, u.since.epoch);
  const s = await subscribed;
  assert.equal(s.recovered, false);
  assert.deepEqual(sub.position, { offset: 33, epoch: u.epoch });
  await apiPublish(srv, "short:trim", "live");
  await waitFor(() => got.length === 4);
  assert.deepEqual(got, [1, 2, 3, 34]);
  // What is still stored can be read: the last 10.
  const page = await sub.history({ since: 0, limit: 100 });
  assert.equal(page.complete, false);
  assert.deepEqual(
    page.publications.map((p) => p.offset),
    Array.from({ length: 10 }, (_, i) => 25 + i),
  );
  client.disconnect();
});

test("`since` {offset: 0, epoch: \"\"} replays from the beginning; a stored position resumes", async (t) => {
  for (let i = 1; i <= 5; i++) await apiPublish(srv, "chat:begin", i);
  const client = new Shardcast(srv.ws("carol"), { WebSocket });
  t.after(() => client.disconnect());
  const sub = client.subscribe("chat:begin", { since: { offset: 0, epoch: "" } });
  const got = [];
  sub.on("publication", (p) => got.push(p.data));
  client.connect();
  const s = await next(sub, "subscribed");
  assert.equal(s.recovered, true);
  await waitFor(() => got.length === 5);
  assert.deepEqual(got, [1, 2, 3, 4, 5]);
  const stored = sub.position;
  client.disconnect();

  // Another client (the app reloaded) starts from the stored position.
  await apiPublish(srv, "chat:begin", 6);
  const c2 = new Shardcast(srv.ws("carol"), { WebSocket });
  t.after(() => c2.disconnect());
  const sub2 = c2.subscribe("chat:begin", { since: stored });
  const got2 = [];
  sub2.on("publication", (p) => got2.push(p.data));
  c2.connect();
  await waitFor(() => got2.length === 1);
  assert.deepEqual(got2, [6]);
  c2.disconnect();
});
