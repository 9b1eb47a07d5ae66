// Connection tokens (refresh before expiry, one retry after an expired one), subscription
// tokens (sub_refresh, resubscribe after token_expired) and server-side subscriptions.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { Shardcast } from "../dist/index.js";
import { apiPublish, jwt, next, nowSecs, sleep, startServer, trackedWebSocket, waitFor } from "./helpers.mjs";

const SECRET = "js-client-test-secret";
const KEY = "js-api-key";
let srv;
before(async () => {
  srv = await startServer([
    "--token-hmac-secret",
    SECRET,
    "--token-expiry-grace",
    "1s",
    "--api-key",
    KEY,
    "--client-publish",
    "authenticated",
    "--history",
    "chat:100000:600s,priv:100000:600s",
    "--config",
    configPath(),
  ]);
});
after(async () => {
  await srv.stop();
});

import { configFile } from "./helpers.mjs";
function configPath() {
  // `priv:*` channels need a subscription token.
  return configFile(`[namespaces.priv]\nsubscribe = "token"\npublish = "authenticated"\n`);
}

const publish = (channel, data) => apiPublish(srv, channel, data, { apiKey: KEY });

test("a 3 s token is refreshed at 80% of its lifetime and the connection stays", async (t) => {
  let calls = 0;
  const client = new Shardcast(`ws://127.0.0.1:${srv.port}/ws`, {
    WebSocket,
    getToken: async () => {
      calls++;
      return jwt(SECRET, { sub: "alice", exp: nowSecs() + 3 });
    },
  });
  t.after(() => client.disconnect());
  const states = [];
  client.on("state", (s) => states.push(s));
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const sub = client.subscribe("chat:tokens");
  const got = [];
  sub.on("publication", (p) => got.push(p.data));
  client.connect();
  await next(sub, "subscribed");
  const id = client.clientId;
  assert.equal(client.user, "alice");
  await sleep(6500); // past two expiries + grace: without refreshes the server closes with 4011
  assert.equal(client.state, "connected");
  assert.equal(client.clientId, id, "the same connection");
  assert.deepEqual(
    states.map((s) => s.state),
    ["connecting", "connected"],
  );
  assert.ok(calls >= 4, `getToken called ${calls} times (1 connect + refreshes)`);
  assert.deepEqual(errors, []);
  await publish("chat:tokens", "still here");
  await waitFor(() => got.length === 1);
});

test("an expired token: exactly one more getToken call, then no more reconnects", async (t) => {
  let calls = 0;
  const client = new Shardcast(`ws://127.0.0.1:${srv.port}/ws`, {
    WebSocket,
    minReconnectDelay: 50,
    getToken: async () => {
      calls++;
      return jwt(SECRET, { sub: "bob", exp: nowSecs() - 60 });
    },
  });
  t.after(() => client.disconnect());
  const states = [];
  client.on("state", (s) => states.push(s));
  client.connect();
  await waitFor(() => states.some((s) => s.state === "disconnected" && !s.reconnect), { what: "giving up" });
  await sleep(1500); // nothing else happens
  assert.equal(calls, 2, "the refused token was fetched again once");
  const drops = states.filter((s) => s.state === "disconnected");
  assert.equal(drops.length, 2);
  for (const d of drops) {
    assert.equal(d.code, 4011);
    assert.equal(d.error, "token_expired");
  }
  assert.equal(drops[0].reconnect, true);
  assert.ok(drops[0].delay <= 500);
  assert.equal(drops[1].reconnect, false);
  assert.equal(client.state, "disconnected");
});

test("a connection whose token ran out (close 4011) reconnects with a fresh token and resumes", async (t) => {
  let calls = 0;
  let backendDown = false;
  const client = new Shardcast(`ws://127.0.0.1:${srv.port}/ws`, {
    WebSocket,
    getToken: async () => {
      calls++;
      // Every refresh fails (the token service is down) until the server closed the connection.
      if (backendDown) throw new Error("token service down");
      return jwt(SECRET, { sub: "carol", exp: nowSecs() + 2 });
    },
  });
  t.after(() => client.disconnect());
  const states = [];
  client.on("state", (s) => {
    states.push(s);
    if (s.state === "disconnected") {
      backendDown = false;
      publish("chat:expire", 2); // published while away
    }
  });
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const sub = client.subscribe("chat:expire");
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  client.connect();
  await next(sub, "subscribed");
  backendDown = true;
  await publish("chat:expire", 1);
  const closed = await next(client, "state", (s) => s.state === "disconnected", 10000);
  assert.equal(closed.code, 4011);
  assert.equal(closed.reconnect, true);
  assert.ok(closed.delay <= 500, "quick reconnect after 4011");
  assert.ok(errors.length >= 1, "the failed refreshes were reported");
  const r = await next(sub, "subscribed", () => true, 10000);
  assert.equal(r.recovered, true);
  await waitFor(() => got.length === 2);
  assert.deepEqual(got, [1, 2]);
  assert.equal(client.state, "connected");
  assert.equal(states.filter((s) => s.state === "disconnected").length, 1);
});

test("subscription tokens: refreshed with sub_refresh; after token_expired one new token resumes", async (t) => {
  let subCalls = 0;
  let failRefresh = false;
  const client = new Shardcast(`ws://127.0.0.1:${srv.port}/ws`, {
    WebSocket,
    getToken: async () => jwt(SECRET, { sub: "dave", exp: nowSecs() + 600 }),
    getSubscriptionToken: async (channel) => {
      subCalls++;
      if (!channel.startsWith("priv:")) return null;
      if (failRefresh) {
        failRefresh = false;
        throw new Error("token service down");
      }
      return jwt(SECRET, { sub: "dave", channel, exp: nowSecs() + 3 });
    },
  });
  t.after(() => client.disconnect());
  const sub = client.subscribe("priv:room");
  const plain = client.subscribe("chat:open");
  const got = [];
  const ended = [];
  const resumes = [];
  sub.on("publication", (p) => got.push(p.offset));
  sub.on("unsubscribed", (e) => ended.push(e));
  sub.on("subscribed", (e) => resumes.push(e));
  client.connect();
  await next(sub, "subscribed");
  await waitFor(() => plain.state === "subscribed", { what: "the plain channel" });
  await publish("priv:room", 1);
  await sleep(5000); // past the first token's exp + grace: sub_refresh kept it
  assert.equal(sub.state, "subscribed");
  assert.deepEqual(ended, []);
  assert.equal(resumes.length, 1);
  const before = subCalls;
  assert.ok(before >= 3, `getSubscriptionToken called ${before} times`);

  // The next refresh fails: the server ends the subscription (token_expired), the client
  // fetches one new token and resumes from its position.
  failRefresh = true;
  const unsub = next(sub, "subscribing", (e) => e.code === "token_expired", 10000);
  const resumed = next(sub, "subscribed", () => true, 15000);
  await sleep(500);
  await publish("priv:room", 2);
  await unsub;
  await publish("priv:room", 3);
  const r = await resumed;
  assert.equal(r.recovered, true);
  await waitFor(() => got.length === 3);
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(ended, [], "never left unsubscribed");

  // Without a token the channel is refused: the error surfaces and the subscription ends.
  const c2 = new Shardcast(`ws://127.0.0.1:${srv.port}/ws`, {
    WebSocket,
    getToken: async () => jwt(SECRET, { sub: "erin", exp: nowSecs() + 600 }),
  });
  t.after(() => c2.disconnect());
  const s2 = c2.subscribe("priv:room");
  const gone = next(s2, "unsubscribed");
  c2.connect();
  const e = await gone;
  assert.equal(e.code, "forbidden");
  assert.equal(s2.state, "unsubscribed");
  assert.equal(c2.getSubscription("priv:room"), undefined);
});

test("server-side subscriptions (token `channels`) are exposed and recovered across reconnects", async (t) => {
  const WS = trackedWebSocket();
  const client = new Shardcast(`ws://127.0.0.1:${srv.port}/ws`, {
    WebSocket: WS,
    minReconnectDelay: 100,
    maxReconnectDelay: 200,
    getToken: async () => jwt(SECRET, { sub: "frank", exp: nowSecs() + 600, channels: ["chat:server-side"] }),
  });
  t.after(() => client.disconnect());
  const subscribedEvent = next(client, "subscribed");
  client.connect();
  const sub = await subscribedEvent;
  assert.equal(sub.channel, "chat:server-side");
  assert.equal(sub.server, true);
  assert.equal(client.getSubscription("chat:server-side"), sub);
  const got = [];
  sub.on("publication", (p) => got.push(p.offset));
  for (let i = 1; i <= 5; i++) await publish("chat:server-side", i);
  await waitFor(() => got.length === 5);

  WS.last().terminate();
  // Published while away and while reconnecting.
  const publishing = (async () => {
    for (let i = 6; i <= 300; i++) await publish("chat:server-side", i);
  })();
  const again = await next(sub, "subscribed", () => true, 10000);
  assert.equal(again.server, true);
  assert.equal(again.recovered, true, "what was missed was read from the history");
  await publishing;
  await waitFor(() => got.length >= 300, { timeout: 10000, what: "300 publications" });
  await sleep(200);
  assert.deepEqual(
    got,
    Array.from({ length: 300 }, (_, i) => i + 1),
  );
  assert.equal(client.getSubscription("chat:server-side"), sub, "the same object");
});
