// Requests through the client: publish, presence, presence_stats, history, and their error codes.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import WebSocket from "ws";
import { Shardcast, ShardcastError } from "../dist/index.js";
import { configFile, next, startServer, waitFor } from "./helpers.mjs";

let srv;
before(async () => {
  const config = configFile(`
[namespaces.chat]
history = { max_len = 100000, ttl = "600s" }
presence = true
join_leave = true
publish = "subscribers"

[namespaces.news]
publish = "none"

[namespaces.small]
presence = true
`);
  srv = await startServer([
    "--insecure",
    "--client-publish",
    "authenticated",
    "--config",
    config,
    "--max-frame-bytes",
    "2048",
    "--presence-max",
    "2",
    "--max-channels-per-connection",
    "3",
  ]);
});
after(async () => {
  await srv.stop();
});

async function connected(t, user, options = {}) {
  const client = new Shardcast(srv.ws(user), { WebSocket, ...options });
  t.after(() => client.disconnect());
  client.connect();
  await waitFor(() => client.state === "connected", { what: `${user} connected` });
  return client;
}

async function rejects(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof ShardcastError, `a ShardcastError, not ${e}`);
    assert.equal(e.code, code, e.message);
    return true;
  });
}

test("publish resolves with offset/epoch, idempotency keys dedupe, errors carry .code", async (t) => {
  const alice = await connected(t, "alice");
  const sub = alice.subscribe("chat:req");
  const got = [];
  sub.on("publication", (p) => got.push(p));
  const r1 = await sub.publish({ text: "hi" }, { idempotencyKey: "k1" });
  assert.equal(r1.offset, 1);
  assert.match(r1.epoch, /^[0-9a-z]+$/i);
  const r2 = await sub.publish({ text: "hi again" }, { idempotencyKey: "k1" });
  assert.deepEqual(r2, r1, "the repeat got the first publication's position");
  await waitFor(() => got.length === 1);
  assert.deepEqual(got[0], { channel: "chat:req", data: { text: "hi" }, from: "alice", offset: 1, epoch: r1.epoch });

  // publish = "subscribers": not subscribed -> forbidden
  await rejects(alice.publish("chat:other", 1), "forbidden");
  // publish = "none"
  await rejects(alice.publish("news:x", 1), "forbidden");
  // frame over --max-frame-bytes
  await rejects(sub.publish({ blob: "x".repeat(4096) }), "too_large");
  // idempotency key on a plain channel
  await rejects(alice.publish("plain:x", 1, { idempotencyKey: "k" }), "no_history");
  // plain channel: ok without offset
  assert.deepEqual(await alice.publish("plain:x", 1), {});
});

test("presence, presence_stats and join/leave", async (t) => {
  const alice = await connected(t, "alice");
  const sa = alice.subscribe("chat:presence");
  await next(sa, "subscribed");
  const joins = [];
  const leaves = [];
  sa.on("join", (e) => joins.push(e));
  sa.on("leave", (e) => leaves.push(e));
  const bob = await connected(t, "bob");
  const sb = bob.subscribe("chat:presence");
  await next(sb, "subscribed");
  await waitFor(() => joins.some((j) => j.user === "bob"), { what: "bob's join" });
  const who = await sa.presence();
  assert.deepEqual(who.map((m) => m.user).sort(), ["alice", "bob"]);
  assert.ok(who.every((m) => /^[0-9a-f]{16}$/.test(m.client)));
  assert.deepEqual(await sa.presenceStats(), { clients: 2, users: 2 });

  // Over --presence-max 2: too_many_members (stats still work).
  const carol = await connected(t, "carol");
  const sc = carol.subscribe("chat:presence");
  await next(sc, "subscribed");
  await rejects(sa.presence(), "too_many_members");
  assert.deepEqual(await sa.presenceStats(), { clients: 3, users: 3 });

  bob.disconnect();
  await waitFor(() => leaves.some((l) => l.user === "bob"), { what: "bob's leave" });
  assert.equal(leaves.find((l) => l.user === "bob").channel, "chat:presence");

  // A namespace without presence.
  const plain = alice.subscribe("plain:nopresence");
  await next(plain, "subscribed");
  await rejects(plain.presence(), "no_presence");
  // Not subscribed (any more): forbidden.
  const small = alice.subscribe("small:x");
  await next(small, "subscribed");
  small.unsubscribe();
  await rejects(small.presence(), "forbidden");
  await rejects(small.presenceStats(), "forbidden");
});

test("history pages, and history errors", async (t) => {
  const alice = await connected(t, "alice");
  const sub = alice.subscribe("chat:hist");
  for (let i = 1; i <= 5; i++) await sub.publish({ i });
  const page = await sub.history({ since: 1, limit: 2 });
  assert.equal(page.offset, 5);
  assert.equal(page.complete, true);
  assert.deepEqual(
    page.publications.map((p) => [p.offset, p.data.i, p.from]),
    [
      [2, 2, "alice"],
      [3, 3, "alice"],
    ],
  );
  const all = await alice.history("chat:hist");
  assert.equal(all.publications.length, 5);
  await rejects(alice.history("plain:x"), "no_history");
  await rejects(alice.history("chat:hist", { limit: 5000 }), "bad_request");
  await rejects(alice.history("user:bob"), "forbidden");
});

test("subscribe errors: final ones end the subscription, `limit` is retried until there is room", async (t) => {
  const alice = await connected(t, "alice", { minReconnectDelay: 100, maxReconnectDelay: 200 });
  const other = alice.subscribe("user:bob");
  const e = await next(other, "unsubscribed");
  assert.equal(e.code, "forbidden");
  assert.equal(alice.getSubscription("user:bob"), undefined);

  const subs = ["a:1", "a:2", "a:3"].map((c) => alice.subscribe(c));
  await waitFor(() => subs.every((s) => s.state === "subscribed"));
  const fourth = alice.subscribe("a:4");
  const err = await next(fourth, "error");
  assert.equal(err.code, "limit");
  assert.equal(fourth.state, "subscribing", "kept, and retried");
  subs[0].unsubscribe();
  await next(fourth, "subscribed", () => true, 5000);
  assert.deepEqual(
    alice.subscriptions().map((s) => s.channel).sort(),
    ["a:2", "a:3", "a:4"],
  );

  // A request that waits for the connection times out with code `timeout`.
  const idle = new Shardcast(srv.ws("idle"), { WebSocket, timeout: 300 });
  await rejects(idle.publish("plain:x", 1), "timeout");
});
