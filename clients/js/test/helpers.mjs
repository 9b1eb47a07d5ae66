// Test helpers: the real shardcast binary on free loopback ports, JWTs, a cuttable TCP proxy.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.SHARDCAST_BIN || resolve(here, "../../../target/debug/shardcast");
export const REPO = resolve(here, "../../..");

if (!existsSync(BIN)) {
  throw new Error(`shardcast binary not found at ${BIN} (cd ${REPO} && cargo build --bin shardcast, or set SHARDCAST_BIN)`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A directory for this test file's logs and configs. */
export const tmp = mkdtempSync(join(tmpdir(), "shardcast-js-"));

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.unref();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Polls `fn` until it returns a truthy value; throws after `timeout` ms. */
export async function waitFor(fn, { timeout = 10000, interval = 20, what = "condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** Resolves with the next `event` of `emitter` that satisfies `pred`. */
export function next(emitter, event, pred = () => true, timeout = 10000) {
  return new Promise((res, rej) => {
    const t = setTimeout(() => {
      emitter.off(event, fn);
      rej(new Error(`timed out waiting for ${event}`));
    }, timeout);
    const fn = (e) => {
      if (!pred(e)) return;
      clearTimeout(t);
      emitter.off(event, fn);
      res(e);
    };
    emitter.on(event, fn);
  });
}

const running = new Set();
process.on("exit", (code) => {
  for (const p of running) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {}
  }
  // The servers' logs stay for a failed run.
  if (code === 0) rmSync(tmp, { recursive: true, force: true });
});

let logCount = 0;

/**
 * Starts the shardcast binary on 127.0.0.1:`port` (a free one by default) with `args`
 * and waits for /healthz. Retries a few times if the port is not free yet (restart).
 */
export async function startServer(args = [], { port, name = "server" } = {}) {
  port ||= await freePort();
  for (let attempt = 0; ; attempt++) {
    const log = join(tmp, `${name}-${port}-${++logCount}.log`);
    const fd = openSync(log, "w");
    const proc = spawn(BIN, ["--listen", `127.0.0.1:${port}`, ...args], {
      stdio: ["ignore", fd, fd],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
    });
    running.add(proc);
    let exited = null;
    proc.on("exit", (code, signal) => {
      exited = { code, signal };
      running.delete(proc);
    });
    const srv = {
      port,
      proc,
      pid: proc.pid,
      log,
      http: `http://127.0.0.1:${port}`,
      ws: (user) => `ws://127.0.0.1:${port}/ws${user ? `?user=${encodeURIComponent(user)}` : ""}`,
      exited: () => exited,
      /** Sends `signal` and waits for the process to end. */
      async stop(signal = "SIGKILL") {
        if (exited) return;
        const done = new Promise((r) => proc.once("exit", r));
        try {
          process.kill(proc.pid, signal);
        } catch {}
        await done;
      },
    };
    const deadline = Date.now() + 20000;
    while (!exited && Date.now() < deadline) {
      try {
        const r = await fetch(`${srv.http}/healthz`);
        if (r.ok) return srv;
      } catch {}
      await sleep(50);
    }
    const out = readFileSync(log, "utf8");
    await srv.stop();
    if (attempt < 20 && /in use|AddrInUse/i.test(out)) {
      await sleep(250);
      continue;
    }
    throw new Error(`shardcast did not start (${JSON.stringify(exited)}), log ${log}: ${out.slice(-2000)}`);
  }
}

/** Writes a TOML config file and returns its path. */
export function configFile(text, name = "shardcast.toml") {
  const p = join(tmp, `${Date.now()}-${Math.random().toString(36).slice(2)}-${name}`);
  writeFileSync(p, text);
  return p;
}

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT. */
export function jwt(secret, claims) {
  const head = b64url({ alg: "HS256", typ: "JWT" }) + "." + b64url(claims);
  return head + "." + createHmac("sha256", secret).update(head).digest("base64url");
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

/** POST /api/publish; resolves with the parsed body (throws on non-2xx unless `raw`). */
export async function apiPublish(srv, channel, data, { apiKey, raw = false, idempotencyKey } = {}) {
  const body = { channel, data };
  if (idempotencyKey) body.idempotency_key = idempotencyKey;
  const headers = { "content-type": "application/json" };
  if (apiKey) headers.authorization = `apikey ${apiKey}`;
  const r = await fetch(`${srv.http ?? srv}/api/publish`, { method: "POST", headers, body: JSON.stringify(body) });
  const j = await r.json().catch(() => ({}));
  if (raw) return { status: r.status, body: j };
  if (!r.ok) throw new Error(`publish ${r.status}: ${JSON.stringify(j)}`);
  return j;
}

/** A `ws` WebSocket class that remembers its instances, so a test can cut them. */
export function trackedWebSocket() {
  const sockets = [];
  class Tracked extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  Tracked.sockets = sockets;
  /** The last socket opened (the client's current connection). */
  Tracked.last = () => sockets[sockets.length - 1];
  return Tracked;
}

/** Records a client's state events. */
export function recordStates(client) {
  const states = [];
  client.on("state", (s) => states.push({ ...s, at: Date.now() }));
  return states;
}

/**
 * A TCP proxy in front of `target` port: `cut()` resets every connection, `freeze()`
 * stops forwarding and hides closes (a black hole: silent, half-open connections),
 * `thaw()` forwards again (and ends the connections that closed meanwhile).
 */
export async function tcpProxy(targetPort) {
  const conns = new Set();
  let frozen = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(proxy.target, "127.0.0.1");
    const pair = { client, upstream };
    conns.add(pair);
    const forward = (from, to) =>
      from.on("data", (d) => {
        if (!frozen) to.write(d);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      // Frozen: a black hole also hides that the other side closed.
      if (frozen) return void (pair.zombie = true);
      conns.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const proxy = {
    /** Where new connections go (change it to move clients to another instance). */
    target: targetPort,
    port: server.address().port,
    connections: () => conns.size,
    cut() {
      for (const { client, upstream } of conns) {
        client.resetAndDestroy ? client.resetAndDestroy() : client.destroy();
        upstream.destroy();
      }
      conns.clear();
    },
    freeze() {
      frozen = true;
    },
    thaw() {
      frozen = false;
      for (const pair of conns) {
        if (!pair.zombie) continue;
        conns.delete(pair);
        pair.client.destroy();
        pair.upstream.destroy();
      }
    },
    close() {
      this.cut();
      return new Promise((r) => server.close(r));
    },
  };
  return proxy;
}
