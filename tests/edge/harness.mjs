// Shared by edge.test.mjs and load.mjs: a mock OpenAI-style upstream, workerd running www/edge/config.capnp,
// memory readings from /proc.
import http from 'node:http';
import net from 'node:net';
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = fileURLToPath(new URL('../../', import.meta.url));
export const workerdBin = join(repo, 'node_modules/workerd/bin/workerd');

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

export const SSE_CHUNKS = [0, 1, 2, 3, 4, 5].map(
  (i) => `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"part ${i} 조각"}}]}\n\n`,
).concat(['data: [DONE]\n\n']);
export const SSE_GAP_MS = 300;

/**
 * Mock upstream. POST /v1/chat/completions answers by the request's `x-mock-mode` header:
 * json (default) | stream (SSE_CHUNKS, SSE_GAP_MS apart) | error500 | destroy (socket closed, no answer) | hang.
 * GET /broken-model/<file> serves the real model files with one weights byte flipped (fails its sha256).
 */
export async function startMock() {
  const calls = [];
  const modelDir = join(repo, 'models/classifier');
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      if (req.method === 'GET' && req.url.startsWith('/broken-model/')) {
        const name = req.url.slice('/broken-model/'.length);
        if (!['manifest.json', 'tokenizer.json', 'model.gguf'].includes(name)) {
          res.writeHead(404).end();
          return;
        }
        let bytes = readFileSync(join(modelDir, name));
        if (name === 'model.gguf') {
          bytes = Buffer.from(bytes);
          bytes[bytes.length - 7] ^= 0xff;
        }
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes);
        return;
      }
      calls.push({ method: req.method, url: req.url, headers: req.headers, rawHeaders: req.rawHeaders, body });
      const mode = req.headers['x-mock-mode'] ?? 'json';
      if (mode === 'destroy') {
        req.socket.destroy();
        return;
      }
      if (mode === 'hang') return; // never answers (the worker's UPSTREAM_TIMEOUT_MS must fire)
      if (mode === 'error500') {
        res.writeHead(500, { 'content-type': 'application/json', 'x-mock-upstream': '1' });
        res.end('{"error":{"message":"upstream exploded","type":"server_error","param":null,"code":null}}');
        return;
      }
      if (mode === 'stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-mock-upstream': '1' });
        for (const c of SSE_CHUNKS) {
          res.write(c);
          await sleep(SSE_GAP_MS);
        }
        res.end();
        return;
      }
      const out = JSON.stringify({
        id: 'chatcmpl-mock', object: 'chat.completion', model: 'mock-model',
        choices: [{ index: 0, message: { role: 'assistant', content: 'mock reply 모의 응답' }, finish_reason: 'stop' }],
      });
      res.writeHead(201, { 'content-type': 'application/json', 'x-mock-upstream': '1', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    calls,
    close: () => new Promise((ok) => { server.closeAllConnections?.(); server.close(() => ok()); }),
  };
}

/** Split the model into parts as for a Cloudflare static-assets deploy (exercises the worker's parts loader). */
export function splitModel(partMiB = 8) {
  const dir = mkdtempSync(join(tmpdir(), 'slm-guard-edge-model-'));
  execFileSync(process.execPath, [join(repo, 'www/edge/prepare-model.mjs'), join(repo, 'models/classifier'), dir, '--part-mib', String(partMiB)], { stdio: 'pipe' });
  return dir;
}

/**
 * workerd serving www/edge/config.capnp on a free port. `env`: the worker's fromEnvironment bindings (nothing is
 * inherited from this shell but PATH and HOME). `modelDir` overrides the MODEL disk service's directory.
 */
export async function startWorkerd({ env = {}, modelDir, inspect = false } = {}) {
  const port = await freePort();
  const args = ['serve', 'www/edge/config.capnp', '--socket-addr', `http=127.0.0.1:${port}`];
  if (modelDir) args.push('--directory-path', `model-files=${modelDir}`);
  const inspectorPort = inspect ? await freePort() : null;
  if (inspect) args.push('--inspector-addr', `127.0.0.1:${inspectorPort}`);
  const proc = spawn(workerdBin, args, {
    cwd: repo,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  let exited = false;
  proc.on('exit', () => (exited = true));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`workerd exited:\n${log}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {
      /* not listening yet */
    }
    if (i > 150) throw new Error(`workerd did not start:\n${log}`);
    await sleep(100);
  }
  return {
    url,
    pid: proc.pid,
    inspector: inspectorPort && `127.0.0.1:${inspectorPort}`,
    log: () => log,
    stop: () => new Promise((ok) => {
      if (exited) return ok();
      proc.once('exit', () => ok());
      proc.kill('SIGTERM');
      setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
    }),
  };
}

/**
 * The isolate's own memory through the V8 inspector (workerd --inspector-addr): JS heap (`totalSize`), ArrayBuffer
 * backing stores (`backingStorageSize`; the model bytes while they are alive) and, from the worker's /healthz, the
 * wasm linear memory. Their sum is what an isolate memory limit counts, unlike the process RSS. MiB.
 */
export async function isolateMemory(wd) {
  const { default: WebSocket } = await import('ws'); // Node 20 has no WebSocket client; ws comes with wrangler
  const list = await (await fetch(`http://${wd.inspector}/json/list`)).json();
  const ws = new WebSocket(list[0].webSocketDebuggerUrl);
  try {
    await new Promise((ok, fail) => {
      ws.once('open', ok);
      ws.once('error', fail);
    });
    const usage = await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('inspector did not answer')), 10_000);
      ws.on('message', (m) => {
        const j = JSON.parse(m);
        if (j.id === 1) {
          clearTimeout(timer);
          if (j.error) fail(new Error(j.error.message));
          else ok(j.result);
        }
      });
      ws.send(JSON.stringify({ id: 1, method: 'Runtime.getHeapUsage' }));
    });
    const wasm = ((await health(wd.url)).wasm_memory_bytes ?? 0) / 2 ** 20;
    const heap = usage.totalSize / 2 ** 20;
    const buffers = (usage.backingStorageSize ?? 0) / 2 ** 20;
    return { heap, heapUsed: usage.usedSize / 2 ** 20, buffers, wasm, total: heap + buffers + wasm };
  } finally {
    ws.terminate();
  }
}

/** VmRSS / VmHWM / RssAnon of a process in MiB (Linux /proc). */
export function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(status.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm'))?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, anon: kb('RssAnon') / 1024 };
}

export async function health(url) {
  return (await fetch(`${url}/healthz`)).json();
}

export const mib = (x) => `${x.toFixed(1)} MiB`;
