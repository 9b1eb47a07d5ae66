// The client against a scripted in-process server (a fake WebSocket): what the real server
// does not easily produce on demand — repeated or skipped offsets, an epoch change, a
// server-side subscription not restored, `offline`/`online` events.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Shardcast } from "../dist/index.js";

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A fake server: `handle(socket, frame)` answers client frames; sockets are recorded. */
function fake(handle = () => {}) {
  const server = { sockets: [], frames: [] };
  server.WebSocket = class {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      server.sockets.push(this);
      setTimeout(() => {
        if (this.readyState !== 0) return;
        this.readyState = 1;
        this.onopen?.({});
        this.push({ op: "connected", client: `c${server.sockets.length}`, user: "u", ping_interval: 25, pong_timeout: 10 });
      });
    }
    send(text) {
      const f = JSON.parse(text);
      server.frames.push(f);
      if (f.op === "ping" && f.id !== undefined) this.push({ op: "pong", id: f.id });
      else handle(this, f);
    }
    close(code = 1000, reason = "") {
      if (this.readyState === 3) return;
      this.readyState = 3;
      setTimeout(() => this.onclose?.({ code, reason }));
    }
    push(f) {
      this.onmessage?.({ data: JSON.stringify(f) });
    }
    /** The server closes (or the network drops) the connection. */
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  };
  server.last = () => server.sockets[server.sockets.length - 1];
  return server;
}

test("repeats are dropped; skipped offsets and a new epoch fire `unrecovered`", async (t) => {
  const server = fake((ws, f) => {
    if (f.op === "subscribe") ws.push({ op: "ok", id: f.id, offset: 5, epoch: "e1" });
  });
  const client = new Shardcast("ws://fake/ws", { WebSocket: server.WebSocket });
  t.after(() => client.disconnect());
  const sub = client.subscribe("chat:1");
  const got = [];
  const unrecovered = [];
  sub.on("publication", (p) => got.push(`${p.epoch}:${p.offset}`));
  sub.on("unrecovered", (e) => unrecovered.push(e));
  client.connect();
  await tick(5);
  assert.equal(sub.state, "subscribed");
  const msg = (offset, epoch = "e1") => server.last().push({ op: "message", channel: "chat:1", data: offset, offset, epoch });
  msg(6);
  msg(6);
  msg(4);
  msg(7);
  msg(9);
  msg(1, "e2");
  msg(1, "e2");
  assert.deepEqual(got, ["e1:6", "e1:7", "e1:9", "e2:1"]);
  assert.deepEqual(
    unrecovered.map((e) => [e.reason, e.since.offset, e.offset, e.epoch]),
    [
      ["gap", 7, 8, "e1"],
      ["epoch_changed", 9, 0, "e2"],
    ],
  );
  assert.deepEqual(sub.position, { offset: 1, epoch: "e2" });
});

test("an `unavailable` subscribe is retried with backoff, resuming from the last delivered position", async (t) => {
  let refusals = 2;
  const server = fake((ws, f) => {
    if (f.op !== "subscribe") return;
    if (!f.since) return ws.push({ op: "ok", id: f.id, offset: 10, epoch: "e" });
    if (refusals-- > 0) return ws.push({ op: "error", id: f.id, code: "unavailable", message: "failing over" });
    ws.push({ op: "ok", id: f.id, offset: 12, epoch: "e", recovered: true });
    // The replay follows the ok, in the same read.
    ws.push({ op: "message", channel: "chat:1", data: 11, offset: 11, epoch: "e" });
    ws.push({ op: "message", channel: "chat:1", data: 12, offset: 12, epoch: "e" });
  });
  const client = new Shardcast("ws://fake/ws", { WebSocket: server.WebSocket, minReconnectDelay: 10, maxReconnectDelay: 40 });
  t.after(() => client.disconnect());
  const sub = client.subscribe("chat:1");
  const got = [];
  const errors = [];
  sub.on("publication", (p) => got.push(p.offset));
  sub.on("error", (e) => errors.push(e.code));
  client.connect();
  await tick(5);
  server.last().push({ op: "message", channel: "chat:1", data: 10.5, offset: 10, epoch: "e" }); // a repeat of the ok's position
  server.last().drop();
  for (let i = 0; i < 50 && sub.state !== "subscribed"; i++) await tick(10);
  await tick(5);
  assert.equal(sub.state, "subscribed");
  assert.deepEqual(errors, ["unavailable", "unavailable"]);
  const resumes = server.frames.filter((f) => f.op === "subscribe" && f.since);
  assert.equal(resumes.length, 3);
  for (const r of resumes) assert.deepEqual(r.since, { offset: 10, epoch: "e" });
  assert.deepEqual(got, [11, 12]);
});

test("a server-side subscription the server does not restore after a reconnect ends with `unsubscribed`", async (t) => {
  const server = fake();
  const client = new Shardcast("ws://fake/ws", { WebSocket: server.WebSocket, minReconnectDelay: 10, maxReconnectDelay: 20 });
  t.after(() => client.disconnect());
  const appeared = [];
  client.on("subscribed", (s) => appeared.push(s));
  client.connect();
  await tick(5);
  server.last().push({ op: "subscribed", channel: "news:1", offset: 3, epoch: "e" });
  assert.equal(appeared.length, 1);
  const sub = client.getSubscription("news:1");
  assert.equal(sub, appeared[0]);
  assert.equal(sub.server, true);
  assert.deepEqual(sub.position, { offset: 3, epoch: "e" });
  const ended = [];
  sub.on("unsubscribed", (e) => ended.push(e));
  server.last().drop();
  assert.equal(sub.state, "subscribing");
  for (let i = 0; i < 50 && !ended.length; i++) await tick(10);
  assert.equal(ended.length, 1);
  assert.match(ended[0].reason, /did not restore/);
  assert.equal(client.getSubscription("news:1"), undefined);
  // Server publications on a channel without a Subscription (the personal channel) reach the client.
  const personal = [];
  client.on("publication", (p) => personal.push(p));
  server.last().push({ op: "message", channel: "user:u", data: { hi: 1 } });
  assert.deepEqual(personal, [{ channel: "user:u", data: { hi: 1 } }]);
});

test("a token refused as unauthorized (close 4500) is not retried", async (t) => {
  const server = fake();
  // Answer `connect` with an error and close, as the server does.
  server.WebSocket = class extends server.WebSocket {
    push(f) {
      if (f.op === "connected") return;
      super.push(f);
    }
    send(text) {
      const f = JSON.parse(text);
      if (f.op === "connect") {
        this.push({ op: "error", id: f.id, code: "unauthorized", message: "signature does not verify" });
        this.drop(4500, "unauthorized");
      }
    }
  };
  let calls = 0;
  const client = new Shardcast("ws://fake/ws", {
    WebSocket: server.WebSocket,
    minReconnectDelay: 10,
    getToken: async () => {
      calls++;
      return "x.y.z";
    },
  });
  t.after(() => client.disconnect());
  const states = [];
  client.on("state", (s) => states.push(s));
  client.connect();
  await tick(100);
  assert.equal(calls, 1);
  assert.equal(server.sockets.length, 1);
  const last = states.at(-1);
  assert.equal(last.state, "disconnected");
  assert.equal(last.code, 4500);
  assert.equal(last.error, "unauthorized");
  assert.equal(last.reason, "signature does not verify", "the server's error message");
  assert.equal(last.reconnect, false);
});

test("`offline` closes the connection, `online` reconnects at once", async (t) => {
  const target = new EventTarget();
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  const server = fake();
  const client = new Shardcast("ws://fake/ws", { WebSocket: server.WebSocket, minReconnectDelay: 60000, maxReconnectDelay: 60000 });
  t.after(() => client.disconnect());
  const states = [];
  client.on("state", (s) => states.push(s));
  client.connect();
  await tick(5);
  assert.equal(client.state, "connected");
  target.dispatchEvent(new Event("offline"));
  assert.equal(client.state, "disconnected");
  assert.equal(server.sockets[0].readyState, 3, "the socket was closed");
  assert.equal(states.at(-1).delay >= 60000, true, "the backoff alone would wait a minute");
  target.dispatchEvent(new Event("online"));
  await tick(5);
  assert.equal(client.state, "connected");
  assert.equal(server.sockets.length, 2);
});

test("unsubscribe() while the subscribe is in flight still unsubscribes on the server", async (t) => {
  const server = fake((ws, f) => {
    if (f.op === "subscribe") setTimeout(() => ws.push({ op: "ok", id: f.id }), 20);
    if (f.op === "unsubscribe") ws.push({ op: "ok", id: f.id });
  });
  const client = new Shardcast("ws://fake/ws", { WebSocket: server.WebSocket });
  t.after(() => client.disconnect());
  client.connect();
  await tick(5);
  const sub = client.subscribe("room:1");
  const events = [];
  sub.on("subscribed", () => events.push("subscribed"));
  sub.on("unsubscribed", () => events.push("unsubscribed"));
  sub.unsubscribe();
  await tick(40);
  assert.deepEqual(
    server.frames.filter((f) => f.channel === "room:1").map((f) => f.op),
    ["subscribe", "unsubscribe"],
  );
  assert.deepEqual(events, ["unsubscribed"]);
  assert.equal(sub.state, "unsubscribed");
  assert.equal(client.getSubscription("room:1"), undefined);
});

test("connections closed soon after connecting (1013, 4008, 4029) keep growing the backoff", async (t) => {
  const server = fake();
  server.WebSocket = class extends server.WebSocket {
    push(f) {
      super.push(f);
      if (f.op === "connected") setTimeout(() => this.drop(1013, "broker unavailable"));
    }
  };
  const random = Math.random;
  Math.random = () => 1; // the top of every window
  t.after(() => {
    Math.random = random;
  });
  const client = new Shardcast("ws://fake/ws", { WebSocket: server.WebSocket, minReconnectDelay: 5, maxReconnectDelay: 80 });
  t.after(() => client.disconnect());
  const delays = [];
  client.on("state", (s) => s.state === "disconnected" && delays.push([s.code, s.delay]));
  client.connect();
  for (let i = 0; i < 100 && delays.length < 6; i++) await tick(10);
  client.disconnect();
  assert.deepEqual(delays.slice(0, 6), [
    [1013, 10],
    [1013, 20],
    [1013, 40],
    [1013, 80],
    [1013, 80],
    [1013, 80],
  ]);
});
