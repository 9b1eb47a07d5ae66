// Reconnects: after SIGKILL + restart on the same port, after a graceful restart (1012),
// after a silent (half-open) connection, and the backoff's bounds.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import WebSocket from "ws";
import { Shardcast, backoff } from "../dist/index.js";
import { apiPublish, freePort, next, recordStates, startServer, tcpProxy, trackedWebSocket, waitFor } from "./helpers.mjs";

const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
});

const ARGS = ["--insecure", "--client-publish", "authenticated", "--history", "chat:100000:600s"];

test("reconnects after the server is SIGKILLed and restarted on the same port", async (t) => {
  const port = await freePort();
  let srv = await startServer(ARGS, { port });
  servers.push(srv);
  const client = new Shardcast(srv.ws("alice"), { WebSocket, minReconnectDelay: 100, maxReconnectDelay: 400 });
  t.after(() => client.disconnect());
  const states = recordStates(client);
  const sub = client.subscribe("chat:kill");
  const unrecovered = [];
  sub.on("unrecovered", (e) => unrecovered.push(e));
  const got = [];
  sub.on("publication", (p) => got.push(p.data.n));
  client.connect();
  await next(sub, "subscribed");
  const firstClient = client.clientId;
  await apiPublish(srv, "chat:kill", { n: 1 });
  await waitFor(() => got.length === 1, { what: "first publication" });

  await srv.stop("SIGKILL");
  await waitFor(() => client.state !== "connected", { what: "the client to notice" });
  // A few attempts fail while nothing listens.
  await waitFor(() => states.filter((s) => s.state === "disconnected").length >= 3, { what: "failed attempts" });
  srv = await startServer(ARGS, { port });
  servers.push(srv);
  const resubscribed = await next(sub, "subscribed", () => true, 15000);
  assert.equal(client.state, "connected");
  assert.notEqual(client.clientId, firstClient, "a new connection");
  // The memory broker lost its history: a new epoch, so the resume could not recover.
  assert.equal(resubscribed.recovered, false);
  assert.equal(unrecovered.length, 1);
  assert.equal(unrecovered[0].reason, "not_recovered");
  assert.equal(unrecovered[0].since.offset, 1);

  await apiPublish(srv, "chat:kill", { n: 2 });
  await waitFor(() => got.length === 2, { what: "publication after the restart" });
  assert.deepEqual(got, [1, 2]);

  const seq = states.map((s) => s.state);
  assert.deepEqual(seq.slice(0, 2), ["connecting", "connected"]);
  assert.equal(seq.at(-1), "connected");
  const drop = states.find((s) => s.state === "disconnected");
  assert.equal(drop.code, 1006, "an abnormal close");
  assert.equal(drop.reconnect, true);
  for (const s of states.filter((s) => s.state === "disconnected")) {
    assert.equal(s.reconnect, true);
    assert.ok(s.delay >= 100 && s.delay <= 400, `delay ${s.delay} within [100, 400]`);
  }
  client.disconnect();
  assert.equal(states.at(-1).state, "disconnected");
  assert.equal(states.at(-1).reconnect, false);
});

test("a graceful restart (close 1012) reconnects within the 0-500 ms jitter", async (t) => {
  const port = await freePort();
  let srv = await startServer(ARGS, { port });
  servers.push(srv);
  const client = new Shardcast(srv.ws("bob"), { WebSocket, minReconnectDelay: 5000, maxReconnectDelay: 20000 });
  t.after(() => client.disconnect());
  const states = recordStates(client);
  client.connect();
  await next(client, "state", (s) => s.state === "connected");
  const closed = next(client, "state", (s) => s.state === "disconnected");
  // SIGTERM: the server drains, closing every connection with 1012.
  const stopped = srv.stop("SIGTERM");
  const e = await closed;
  await stopped;
  assert.equal(e.code, 1012);
  assert.equal(e.reconnect, true);
  assert.ok(e.delay >= 0 && e.delay <= 500, `1012 delay ${e.delay} in [0, 500] despite minReconnectDelay 5000`);
  srv = await startServer(ARGS, { port });
  servers.push(srv);
  await waitFor(() => client.state === "connected", { timeout: 30000, what: "reconnect" });
  client.disconnect();
  assert.ok(states.some((s) => s.state === "connecting" && s.attempt >= 1));
});

test("a silent connection is detected by the keepalive and replaced", async (t) => {
  const srv = await startServer([...ARGS, "--ping-interval", "1s", "--pong-timeout", "1s"]);
  servers.push(srv);
  const proxy = await tcpProxy(srv.port);
  t.after(() => proxy.close());
  const client = new Shardcast(`ws://127.0.0.1:${proxy.port}/ws?user=carol`, {
    WebSocket,
    minReconnectDelay: 100,
    maxReconnectDelay: 200,
  });
  t.after(() => client.disconnect());
  const sub = client.subscribe("chat:silent");
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  client.connect();
  await next(sub, "subscribed");
  await apiPublish(srv, "chat:silent", 1);
  await waitFor(() => got.length === 1);
  proxy.freeze(); // nothing passes, no FIN, no RST
  const e = await next(client, "state", (s) => s.state === "disconnected", 10000);
  assert.equal(e.code, 4009);
  assert.match(e.reason, /keepalive/);
  await apiPublish(srv, "chat:silent", 2);
  proxy.thaw();
  const r = await next(sub, "subscribed", () => true, 10000);
  assert.equal(r.recovered, true);
  await waitFor(() => got.length === 2, { what: "the publication made while frozen" });
  assert.deepEqual(got, [1, 2]);
  client.disconnect();
  await proxy.close();
});

test("backoff delays stay within the jittered bounds (nothing listens)", async (t) => {
  // Pure function: the window doubles from min up to max, never below min.
  for (let n = 1; n < 12; n++) {
    const hi = Math.min(2000, 100 * 2 ** n);
    assert.equal(backoff(n, 100, 2000, () => 0), 100);
    assert.equal(backoff(n, 100, 2000, () => 1), hi);
  }
  const port = await freePort();
  const min = 100;
  const max = 800;
  const client = new Shardcast(`ws://127.0.0.1:${port}/ws?user=dave`, {
    WebSocket: trackedWebSocket(),
    minReconnectDelay: min,
    maxReconnectDelay: max,
  });
  t.after(() => client.disconnect());
  const states = recordStates(client);
  client.connect();
  await waitFor(() => states.filter((s) => s.state === "disconnected").length >= 8, { timeout: 20000, what: "8 attempts" });
  client.disconnect();
  const drops = states.filter((s) => s.state === "disconnected" && s.reconnect);
  assert.ok(drops.length >= 7);
  drops.slice(0, 7).forEach((d, i) => {
    const n = i + 1;
    const hi = Math.min(max, min * 2 ** n);
    assert.ok(d.delay >= min && d.delay <= hi, `attempt ${n}: delay ${d.delay} within [${min}, ${hi}]`);
    // The next attempt started after that delay (timers never fire early; generous upper bound).
    const started = states.find((s) => s.state === "connecting" && s.at >= d.at && s.attempt === n);
    assert.ok(started, `attempt ${n} started`);
    const waited = started.at - d.at;
    assert.ok(waited >= d.delay - 5 && waited <= d.delay + 1000, `attempt ${n}: waited ${waited} ms for a ${d.delay} ms delay`);
  });
  // Spread out: not all the same (full jitter).
  assert.ok(new Set(drops.map((d) => d.delay)).size > 1);
});

test("close codes 4500-4999 stop reconnecting (POST /api/disconnect: 4501)", async (t) => {
  const srv = await startServer(ARGS);
  servers.push(srv);
  const client = new Shardcast(srv.ws("erin"), { WebSocket, minReconnectDelay: 100 });
  t.after(() => client.disconnect());
  client.connect();
  await next(client, "state", (s) => s.state === "connected");
  const closed = next(client, "state", (s) => s.state === "disconnected");
  const r = await fetch(`${srv.http}/api/disconnect`, { method: "POST", body: JSON.stringify({ user: "erin" }) });
  assert.equal(r.status, 200);
  const e = await closed;
  assert.equal(e.code, 4501);
  assert.equal(e.reconnect, false);
  assert.equal(client.state, "disconnected");
});
