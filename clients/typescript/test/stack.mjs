// A private Showrunner stack for the client's tests: its own PostgreSQL database and RabbitMQ
// vhost (named `sr_test_...`, so .ci/run's leftover sweep removes them after a killed run), the
// migrations, the api and every worker role as separate processes of the built binaries
// (SHOWRUNNER_BIN_DIR, default $CARGO_TARGET_DIR/debug). The api can be killed and started
// again on the same port, as a crash would. `stop()` ends every process and drops both.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, homedir } from 'node:os';
import { join } from 'node:path';

export const SECRET = 'kit-test-secret-kit-test-secret-kit';
const MANAGEMENT = 'http://127.0.0.1:15672/api';
const GUEST = 'Basic ' + Buffer.from('guest:guest').toString('base64');

export function binDir() {
  if (process.env.SHOWRUNNER_BIN_DIR) return process.env.SHOWRUNNER_BIN_DIR;
  const target = process.env.CARGO_TARGET_DIR ?? join(homedir(), '.cache/showrunner/target');
  return join(target, 'debug');
}

/** An HS256 token as `showrunner token` mints it. */
export function token({ sub = randomUUID(), name = 'Tester', role = 'member', hours = 1 } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({
    sub,
    name,
    email: `${name.toLowerCase()}@example.com`,
    role,
    exp: Math.floor(Date.now() / 1000) + hours * 3600,
  })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function management(method, path, body) {
  const response = await fetch(`${MANAGEMENT}/${path}`, {
    method,
    headers: { authorization: GUEST, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  if (!response.ok && response.status !== 404) {
    throw new Error(`RabbitMQ management ${method} ${path}: ${response.status}`);
  }
}

function psql(sql) {
  execFileSync('psql', ['-h', '127.0.0.1', '-U', 'postgres', '-qAtc', sql], { stdio: 'pipe' });
}

/** Waits until `check()` is truthy, or fails after `ms`. */
export async function waitUntil(what, check, ms = 20_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
}

export class Stack {
  constructor() {
    this.name = `sr_test_kit_${randomUUID().replaceAll('-', '')}`;
    this.processes = new Map();
    this.files = mkdtempSync(join(tmpdir(), 'sr-kit-files-'));
    this.logs = [];
  }

  env(extra = {}) {
    return {
      ...process.env,
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
      SHOWRUNNER__DATABASE__URL: `postgres://postgres@127.0.0.1:5432/${this.name}`,
      SHOWRUNNER__DATABASE__MAX_CONNECTIONS: '5',
      SHOWRUNNER__AMQP__URL: `amqp://guest:guest@127.0.0.1:5672/${this.name}`,
      SHOWRUNNER__AMQP__PARTITIONS: '2',
      SHOWRUNNER__AUTH__JWT_SECRET: SECRET,
      SHOWRUNNER__OPS__ENABLED: 'false',
      SHOWRUNNER__STORAGE__URL: `file://${this.files}`,
      SHOWRUNNER__HTTP__ADDR: `127.0.0.1:${this.port}`,
      SHOWRUNNER__WORKERS__HEARTBEAT_SECS: '1',
      SHOWRUNNER__WORKERS__HEARTBEAT_TTL_SECS: '4',
      ...extra,
    };
  }

  async start({ extraEnv = {} } = {}) {
    this.extraEnv = extraEnv;
    this.port = await freePort();
    this.origin = `http://127.0.0.1:${this.port}`;
    psql(`create database "${this.name}"`);
    await management('PUT', `vhosts/${this.name}`, {});
    await management('PUT', `permissions/${this.name}/guest`, { configure: '.*', write: '.*', read: '.*' });
    execFileSync(join(binDir(), 'showrunner-migrate'), [], { env: this.env(extraEnv), stdio: 'pipe' });
    for (const role of ['episode', 'activity', 'notification', 'job']) {
      this.run(role, `showrunner-${role}-worker`);
    }
    await this.startApi();
    return this;
  }

  run(key, binary) {
    const child = spawn(join(binDir(), binary), [], { env: this.env(this.extraEnv), stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (chunk) => {
      this.logs.push(`[${key}] ${chunk}`);
      if (this.logs.length > 400) this.logs.shift();
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    this.processes.set(key, child);
    return child;
  }

  async startApi() {
    this.run('api', 'showrunner-api');
    await waitUntil('the api to be ready', async () => (await fetch(`${this.origin}/ready`)).ok, 60_000);
  }

  /** Kills the api as a crash would (SIGKILL: no drain, sockets cut). */
  async killApi() {
    const child = this.processes.get('api');
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    this.processes.delete('api');
  }

  async stop() {
    const all = [...this.processes.values()].map(
      (child) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const hard = setTimeout(() => child.kill('SIGKILL'), 10_000);
          child.once('exit', () => {
            clearTimeout(hard);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    );
    await Promise.all(all);
    this.processes.clear();
    try {
      psql(`drop database if exists "${this.name}" with (force)`);
    } catch (error) {
      console.error(`drop database ${this.name}: ${error}`);
    }
    await management('DELETE', `vhosts/${this.name}`).catch((e) => console.error(String(e)));
    rmSync(this.files, { recursive: true, force: true });
  }
}
