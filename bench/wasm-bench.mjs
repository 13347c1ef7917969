// wasm (Node, single thread) benchmark of the npm package on the shipped model: load time, latency median/p95 at
// ~16/32/64/256 tokens, the reply gate's check (`checkReply`) at ~16/64 tokens, batch throughput. Usage: node bench/wasm-bench.mjs [--iters 50] [--out file.json]
// [--pkg DIR] (another build of the package, for A/B runs of two builds in one session)
import { readFile, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';

const args = Object.fromEntries(process.argv.slice(2).reduce((a, x, i, all) => (x.startsWith('--') ? [...a, [x.slice(2), all[i + 1]]] : a), []));
const { Guard } = await import(args.pkg ? pathToFileURL(resolve(args.pkg, 'index.js')).href : '../pkg/index.js');
const iters = Number(args.iters ?? 50);
const dir = new URL('../models/classifier/', import.meta.url);
const files = {
  manifest: await readFile(new URL('manifest.json', dir)),
  weights: await readFile(new URL('model.gguf', dir)),
  tokenizer: await readFile(new URL('tokenizer.json', dir)),
};

const loads = [];
let guard;
for (let i = 0; i < 3; i++) {
  guard?.dispose();
  const t = performance.now();
  guard = await Guard.load({ model: files });
  loads.push(performance.now() - t);
}

const PARTS = [
  '오늘 회의 자료 정리해서 팀장님께 보내드려야 하는데 요약 좀 도와줄래?',
  'Can you help me plan a weekend trip to Busan with a small budget?',
  '요즘 잠을 잘 못 자서 그런지 하루 종일 피곤하네요.',
  'What are some good ways to learn Rust if I already know Python?',
];
// a message with about `target` tokens (the verdict reports the token count, specials included)
async function messageOf(target) {
  let words = [];
  for (let i = 0; ; i++) {
    const next = [...words, ...PARTS[i % PARTS.length].split(' ')];
    if ((await guard.classify(next.join(' '))).tokens > target) break;
    words = next;
  }
  for (const w of PARTS[words.length % PARTS.length].split(' ')) {
    const next = [...words, w];
    if ((await guard.classify(next.join(' '))).tokens > target) break;
    words = next;
  }
  return words.join(' ');
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.round((s.length - 1) * p))];
  return { median_ms: q(0.5), p95_ms: q(0.95) };
};

const latency = [];
for (const target of [16, 32, 64, 256]) {
  const text = await messageOf(target);
  for (let i = 0; i < 3; i++) await guard.classify(text);
  const ms = [];
  let v;
  for (let i = 0; i < iters; i++) {
    const t = performance.now();
    v = await guard.classify(text);
    ms.push(performance.now() - t);
  }
  latency.push({ target_tokens: target, tokens: v.tokens, windows: v.windows, ...stats(ms), iters });
}
// the reply gate's check of a reply so far: the shared layers, then the reply branch's (where the model has it)
const replyCheck = [];
for (const target of guard.info().labels.includes('reply_unsafe') ? [16, 64] : []) {
  const text = await messageOf(target);
  for (let i = 0; i < 3; i++) await guard.checkReply(text);
  const ms = [];
  for (let i = 0; i < iters; i++) {
    const t = performance.now();
    await guard.checkReply(text);
    ms.push(performance.now() - t);
  }
  replyCheck.push({ target_tokens: target, ...stats(ms), iters });
}
const msg = await messageOf(32);
const batch = Array(64).fill(msg);
await guard.classifyBatch(batch);
const t = performance.now();
for (let i = 0; i < 3; i++) await guard.classifyBatch(batch);
const report = {
  runtime: `node ${process.version} (wasm32 simd128, single thread)`,
  model: `${guard.info().model}@${guard.info().version}`,
  load_ms_median: stats(loads).median_ms,
  latency,
  reply_check_latency: replyCheck,
  throughput_msgs_per_s_batch64_32tok: (3 * batch.length) / ((performance.now() - t) / 1000),
  rss_mb: process.memoryUsage().rss / 2 ** 20,
};
console.log(JSON.stringify(report, null, 2));
if (args.out) await writeFile(args.out, JSON.stringify(report, null, 2));
