// The chat demo (examples/chat) in headless Chromium: two pages exchange messages; one goes
// offline (CDP network emulation) while messages are published, comes back, and shows every
// message once, in order.
//
// What the emulation does (checked below): Network.emulateNetworkConditions {offline: true}
// fires the page's `offline` event, makes new connections fail (ERR_INTERNET_DISCONNECTED)
// and stalls an open WebSocket without closing it. The client closes its socket itself on
// `offline`; the test verifies from the server's side (/metrics, and the other page's `leave`)
// that the connection really ended. No test-only hook is used.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import puppeteer from "puppeteer-core";
import { REPO, apiPublish, sleep, startServer, waitFor } from "../helpers.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const EXAMPLE = join(REPO, "examples/chat");
// examples/chat/screenshot.png only when asked (SHARDCAST_SCREENSHOTS=1): a test run
// leaves the checkout clean.
const SCREENSHOT = process.env.SHARDCAST_SCREENSHOTS === "1"
  ? join(EXAMPLE, "screenshot.png")
  : join(tmpdir(), `shardcast-chat-${process.pid}.png`);

let srv;
let browser;
const profile = mkdtempSync(join(tmpdir(), "shardcast-chromium-"));
before(async () => {
  assert.ok(existsSync(join(EXAMPLE, "public", "shardcast-client.js")), "run `npm run build` first");
  srv = await startServer(["--config", join(EXAMPLE, "shardcast.toml"), "--static-dir", join(EXAMPLE, "public")], { name: "chat" });
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--headless",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
      `--user-data-dir=${profile}`,
    ],
  });
});
after(async () => {
  await browser?.close();
  await srv?.stop();
  rmSync(profile, { recursive: true, force: true });
});

async function open(user, room) {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 900 });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(`${srv.http}/?user=${user}&room=${room}`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  page.errors = errors;
  return page;
}

const offsets = (page) => page.$$eval("#messages li.msg", (els) => els.map((e) => Number(e.dataset.offset)));
const texts = (page) => page.$$eval("#messages li.msg .text", (els) => els.map((e) => e.textContent));
const members = (page) => page.$$eval("#members li", (els) => els.map((e) => e.textContent));
async function connections() {
  const m = await (await fetch(`${srv.http}/metrics`)).text();
  return Number(/^shardcast_connections (\d+)/m.exec(m)[1]);
}
async function say(page, text) {
  await page.bringToFront(); // a background tab may not get input events
  await page.type("#text", text);
  await page.click("#send");
}

test("two pages chat; one goes offline, comes back and shows every message once, in order", async () => {
  const room = "lobby";
  const alice = await open("alice", room);
  const bob = await open("bob", room);
  await waitFor(async () => (await members(alice)).join() === "alice,bob", { what: "alice sees bob" });
  await waitFor(async () => (await members(bob)).join() === "alice,bob", { what: "bob sees alice" });

  await say(alice, "hi bob");
  await waitFor(async () => (await texts(bob)).includes("hi bob"), { what: "bob gets it" });
  await say(bob, "hi alice");
  await waitFor(async () => (await texts(alice)).includes("hi alice"), { what: "alice gets it" });
  assert.equal(await connections(), 2);

  // Bob goes offline.
  await bob.setOfflineMode(true);
  assert.equal(await bob.evaluate(() => navigator.onLine), false);
  await bob.waitForSelector('#status[data-state="disconnected"]', { timeout: 5000 });
  await waitFor(async () => (await connections()) === 1, { what: "the server to see bob's connection end" });
  await waitFor(async () => (await members(alice)).join() === "alice", { what: "bob's leave at alice" });
  // While offline a reconnect cannot succeed.
  await sleep(1200);
  assert.notEqual(await bob.evaluate(() => window.chat.client.state), "connected");

  // Messages while bob is away: from alice's page and from the backend.
  const away = [];
  for (let i = 1; i <= 15; i++) {
    const text = `while away ${i}`;
    away.push(text);
    await say(alice, text);
    // Acknowledged (and echoed) before the next one: the expected order is the server's.
    await waitFor(async () => (await texts(alice)).includes(text), { what: `alice's "${text}"` });
    if (i % 5 === 0) {
      const t = `backend note ${i / 5}`;
      away.push(t);
      await apiPublish(srv, `chat:${room}`, { text: t });
    }
  }
  await waitFor(async () => (await texts(alice)).length === 2 + away.length, { what: "alice's list" });

  // Bob comes back: `online` reconnects at once and the subscription resumes with `since`.
  await bob.setOfflineMode(false);
  await bob.waitForSelector('#status[data-state="connected"]', { timeout: 10000 });
  await waitFor(async () => (await texts(bob)).length >= 2 + away.length, { what: "bob catches up" });
  await say(bob, "back!");
  await waitFor(async () => (await texts(alice)).includes("back!"), { what: "alice gets bob's return" });
  await waitFor(async () => (await texts(bob)).includes("back!"));
  await sleep(300);

  const expected = ["hi bob", "hi alice", ...away, "back!"];
  for (const page of [alice, bob]) {
    assert.deepEqual(await texts(page), expected, "every message once, in order");
    assert.deepEqual(
      await offsets(page),
      expected.map((_, i) => i + 1),
    );
    assert.deepEqual(page.errors, []);
  }
  const notices = await bob.$$eval("#messages li.notice", (els) => els.map((e) => e.textContent));
  assert.ok(notices.some((n) => n.startsWith("connection lost")), notices.join(" | "));
  assert.ok(notices.includes(`reconnected: replaying ${away.length} missed messages`), notices.join(" | "));
  await waitFor(async () => (await members(alice)).join() === "alice,bob", { what: "bob back in the room" });
  await bob.screenshot({ path: SCREENSHOT });
});
