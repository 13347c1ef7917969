// The same worker under `wrangler dev` (Miniflare): the model comes from the static-assets binding (the build step
// splits the weights under 25 MiB), the wasm is bundled as a module, forwarding and streaming work.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { spawn, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repo, startMock, freePort, sleep, SSE_CHUNKS, SSE_GAP_MS } from './harness.mjs';

test('wrangler dev serves the worker with the model as static assets', { timeout: 240_000 }, async (t) => {
  // The build step wrangler runs at start-up, run here first: wrangler watches the assets directory, and files that
  // appear after it started restart the worker, which answers a POST in flight with 503 ("restarted mid-request").
  // With the files in place the start-up build rewrites nothing (prepare-model.mjs skips unchanged files).
  execFileSync(process.execPath, [join(repo, 'www/edge/prepare-model.mjs')], { stdio: 'pipe' });
  const mock = await startMock();
  const port = await freePort();
  const proc = spawn(process.execPath, [
    join(repo, 'node_modules/wrangler/bin/wrangler.js'), 'dev', '--config', 'www/edge/wrangler.toml',
    '--ip', '127.0.0.1', '--port', String(port), '--show-interactive-dev-session=false',
    '--var', `UPSTREAM_URL:${mock.url}`, '--var', 'ALLOW_POLICY_HEADER:true',
  ], {
    cwd: repo,
    detached: true, // its own process group: wrangler starts workerd children
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CI: '1', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  proc.stdout.on('data', (d) => (log += d));
  proc.stderr.on('data', (d) => (log += d));
  t.after(async () => {
    try {
      process.kill(-proc.pid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    await mock.close();
  });
  const url = `http://127.0.0.1:${port}`;
  // wrangler 4 runs the custom build twice: once to start, once more when its watcher on models/classifier is ready,
  // and that second build reloads the worker, possibly after "Ready on" and after a first /readyz. A GET caught in
  // the reload is retried by wrangler; a POST gets its 503 "restarted mid-request" without reaching our worker, and
  // is sent again here (a few times at most; any other answer counts). The checks start after the second build.
  const builds = () => (log.match(/file\(s\) written/g) ?? []).length;
  for (let i = 0; i < 90 && builds() < 2; i++) await sleep(1000);
  let reloads = 0;
  const retryingReload = async (send) => {
    for (let i = 0; ; i++) {
      const r = await send();
      if (!(r.status === 503 && r.text.includes('Your worker restarted mid-request')) || i >= 9) return r;
      reloads++;
      await sleep(1000);
    }
  };
  let ready;
  for (let i = 0; i < 150 && !ready; i++) {
    await sleep(1000);
    ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(60_000) }).catch(() => null);
  }
  assert.ok(ready, `wrangler dev did not start:\n${log}`);
  const h = await ready.json();
  assert.equal(ready.status, 200, JSON.stringify(h) + log);
  assert.equal(h.status, 'ok');
  assert.match(h.model, /^slm-guard-classifier@/);

  const m = await retryingReload(async () => {
    const r = await fetch(`${url}/v1/moderations`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ input: ['안녕하세요', 'hello'] }),
    });
    return { status: r.status, text: await r.text() };
  });
  assert.equal(m.status, 200, `${m.text}\n${log}`);
  const body = JSON.parse(m.text);
  assert.match(body.id, /^modr-/);
  assert.deepEqual(body.results.map((r) => r.lang), ['ko', 'en']);

  // the model files are reachable through the binding only
  assert.equal((await fetch(`${url}/manifest.json`)).status, 404);

  // forwarding with a streamed answer
  const none = { unsafe_threshold: 1, categories: Object.fromEntries(['hate', 'harassment', 'violence', 'sexual', 'sexual_minors', 'self_harm', 'crime', 'privacy', 'prompt_attack'].map((c) => [c, { threshold: 1 }])) };
  const { status, text, chunks } = await retryingReload(() => new Promise((resolve, reject) => {
    const chunks = [];
    const t0 = Date.now();
    const req = http.request(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer sk-w', 'x-mock-mode': 'stream', 'x-slm-guard-policy': JSON.stringify(none) },
    }, (res) => {
      res.on('data', (c) => chunks.push({ at: Date.now() - t0, c }));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks.map((x) => x.c)).toString(), chunks }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ model: 'x', stream: true, messages: [{ role: 'user', content: 'Nice weather today' }] }));
  }));
  assert.equal(status, 200, `${text}\n${log}`);
  assert.equal(text, SSE_CHUNKS.join(''));
  assert.ok(chunks.at(-1).at - chunks[0].at >= 3 * SSE_GAP_MS, 'the stream was buffered');
  assert.equal(mock.calls.at(-1).headers.authorization, 'Bearer sk-w');
  if (reloads) console.log(`${reloads} POST(s) sent again after wrangler's start-up reload`);
});
