// Test harness: a local Redis Cluster (cluster/start.sh), shardcast instances on it,
// WebSocket clients, headless Chromium. Everything started here is stopped by PID.

import { spawn, execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import WebSocket from 'ws';

const run = promisify(execFile);

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');
export const SHARDCAST_BIN = process.env.SHARDCAST_BIN || path.join(repo, 'target/debug/shardcast');
export const CLUSTER_BIN = process.env.SHARDCAST_CLUSTER_BIN || path.join(repo, 'target/debug/shardcast-cluster');
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const ADMIN_KEY = 'adminkey';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Throws with the reason when something the test needs is missing. */
export function checkPrerequisites() {
  const missing = [];
  const exe = (p) => {
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (!exe(SHARDCAST_BIN)) missing.push(`shardcast binary ${SHARDCAST_BIN} (cd ${repo} && cargo build --bin shardcast, or set SHARDCAST_BIN)`);
  if (!exe(CLUSTER_BIN)) missing.push(`cluster CLI ${CLUSTER_BIN} (cd ${repo} && cargo build -p shardcast-testkit --no-default-features --bin shardcast-cluster)`);
  if (!exe(CHROMIUM_BIN)) missing.push(`chromium ${CHROMIUM_BIN} (apt-get install chromium, or set CHROMIUM_BIN)`);
  for (const tool of ['redis-server', 'redis-cli']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      missing.push(`${tool} (apt-get install redis-server)`);
    }
  }
  if (missing.length) throw new Error(`missing prerequisites:\n  - ${missing.join('\n  - ')}`);
}

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A base port P < 32768 with P..P+5 and P+10000..P+10005 free. */
export async function freeClusterBase() {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 2700);
    let ok = true;
    for (let i = 0; i < 6 && ok; i++) ok = (await portFree(base + i)) && (await portFree(base + 10000 + i));
    if (ok) return base;
  }
  throw new Error('no free port range for the Redis Cluster');
}

/** A free TCP port (the kernel's choice). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const clusterEnv = () => ({ ...process.env, SHARDCAST_CLUSTER_BIN: CLUSTER_BIN });

export class Cluster {
  constructor(dir) {
    this.dir = dir;
    this.seeds = '';
    this.base = 0;
  }

  async start() {
    this.base = await freeClusterBase();
    const { stdout } = await run(path.join(repo, 'cluster/start.sh'), ['--base-port', String(this.base), '--dir', this.dir], {
      env: clusterEnv(),
      timeout: 90_000,
    });
    this.seeds = stdout.trim().split('\n').pop().trim();
    if (!this.seeds.startsWith('redis://')) throw new Error(`cluster/start.sh printed no seeds: ${stdout}`);
    return this.seeds;
  }

  async cli(...args) {
    const { stdout } = await run('redis-cli', ['-p', String(this.base), ...args], { timeout: 10_000 });
    return stdout;
  }

  async keyslot(name) {
    return Number((await this.cli('CLUSTER', 'KEYSLOT', name)).trim());
  }

  /** Primaries: [{ addr, port, slots: [[a,b]] }] from CLUSTER NODES. */
  async primaries() {
    const out = await this.cli('CLUSTER', 'NODES');
    const list = [];
    for (const line of out.trim().split('\n')) {
      const f = line.trim().split(/\s+/);
      const flags = f[2].split(',');
      if (!flags.includes('master') || flags.includes('fail')) continue;
      const addr = f[1].split('@')[0];
      const slots = f.slice(8).filter((s) => !s.startsWith('[')).map((s) => {
        const [a, b] = s.split('-').map(Number);
        return [a, b === undefined ? a : b];
      });
      list.push({ addr, port: Number(addr.split(':')[1]), slots });
    }
    return list;
  }

  async ownerOf(slot) {
    return (await this.primaries()).find((p) => p.slots.some(([a, b]) => a <= slot && slot <= b));
  }

  async migrateSlot(slot, toPort) {
    const { stdout, stderr } = await run(path.join(repo, 'cluster/migrate-slot.sh'), ['--dir', this.dir, '--slot', String(slot), '--to', String(toPort)], {
      env: clusterEnv(),
      timeout: 60_000,
    });
    return (stdout + stderr).trim();
  }

  stopSync() {
    if (!this.base) return;
    try {
      execFileSync(path.join(repo, 'cluster/stop.sh'), ['--dir', this.dir], { env: clusterEnv(), stdio: 'ignore', timeout: 30_000 });
    } catch (e) {
      console.error(`cluster/stop.sh failed: ${e.message}`);
    }
    this.base = 0;
  }

  async stop() {
    if (!this.base) return;
    await run(path.join(repo, 'cluster/stop.sh'), ['--dir', this.dir], { env: clusterEnv(), timeout: 30_000 });
    this.base = 0;
  }
}

export class Instance {
  constructor({ id, port, seeds, dir }) {
    this.id = id;
    this.port = port;
    this.seeds = seeds;
    this.log = path.join(dir, `${id}.log`);
    this.proc = null;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  start() {
    const out = fs.openSync(this.log, 'a');
    this.proc = spawn(SHARDCAST_BIN, [
      '--listen', `127.0.0.1:${this.port}`,
      '--broker', 'redis-cluster',
      '--redis-nodes', this.seeds,
      '--insecure',
      '--admin-key', ADMIN_KEY,
      '--instance-ttl', '3s',
      '--topology-interval', '1s',
      '--instance-id', this.id,
    ], { stdio: ['ignore', out, out], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' } });
    fs.closeSync(out);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => resolve({ code, signal })));
  }

  async ready(timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
        throw new Error(`${this.id} exited early:\n${this.tail()}`);
      }
      try {
        const r = await fetch(`${this.url}/readyz`);
        if (r.ok) return;
        last = `${r.status} ${await r.text()}`;
      } catch (e) {
        last = e.message;
      }
      await sleep(100);
    }
    throw new Error(`${this.id} not ready within ${timeoutMs} ms (${last}):\n${this.tail()}`);
  }

  alive() {
    return this.proc && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  kill(signal = 'SIGKILL') {
    if (this.alive()) process.kill(this.proc.pid, signal);
  }

  async stop() {
    if (!this.alive()) return;
    this.kill('SIGTERM');
    const t = setTimeout(() => this.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }

  tail(lines = 30) {
    try {
      return fs.readFileSync(this.log, 'utf8').trim().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

/** A WebSocket client: connected, subscribes, counts messages per channel. */
export class Client {
  constructor(port, user) {
    this.url = `ws://127.0.0.1:${port}/ws?user=${encodeURIComponent(user)}`;
    this.user = user;
    this.nextId = 1;
    this.waiters = [];
    this.received = new Map();
  }

  open(timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      const timer = setTimeout(() => reject(new Error(`${this.url}: no "connected" within ${timeoutMs} ms`)), timeoutMs);
      ws.on('error', (e) => reject(e));
      ws.on('message', (raw) => {
        for (const line of raw.toString().split('\n')) {
          if (!line.trim()) continue;
          const f = JSON.parse(line);
          if (f.op === 'connected') {
            clearTimeout(timer);
            resolve(f);
          }
          if (f.op === 'message') this.received.set(f.channel, (this.received.get(f.channel) || 0) + 1);
          for (const w of [...this.waiters]) {
            if (w.match(f)) {
              this.waiters.splice(this.waiters.indexOf(w), 1);
              w.resolve(f);
            }
          }
        }
      });
    });
  }

  wait(match, what, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const w = { match, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new Error(`${this.user}: no ${what} within ${timeoutMs} ms`));
        }
      }, timeoutMs);
    });
  }

  async subscribe(channel) {
    const id = this.nextId++;
    const reply = this.wait((f) => f.id === id && (f.op === 'ok' || f.op === 'error'), `reply to subscribe ${channel}`);
    this.ws.send(JSON.stringify({ op: 'subscribe', channel, id }));
    const f = await reply;
    if (f.op !== 'ok') throw new Error(`subscribe ${channel} refused: ${JSON.stringify(f)}`);
  }

  count(channel) {
    return this.received.get(channel) || 0;
  }

  close() {
    try {
      this.ws.terminate();
    } catch {
      /* gone */
    }
  }
}

export function tmpdir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
