#!/usr/bin/env node
// Lay out a model directory for the edge worker's static assets: manifest.json and tokenizer.json as they are, the
// weights split into parts under Cloudflare's 25 MiB per-asset limit plus model.gguf.parts.json listing them.
// The worker joins the parts in memory and the Rust core checks the whole file's sha256 against the manifest.
//
//   node www/edge/prepare-model.mjs [SRC=models/classifier] [DEST=www/edge/model] [--part-mib 20]
import { mkdir, readFile, writeFile, rm, readdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { join, resolve } from 'node:path';

const repo = fileURLToPath(new URL('../../', import.meta.url));
const args = process.argv.slice(2);
let partMiB = 20;
const i = args.indexOf('--part-mib');
if (i >= 0) {
  partMiB = Number(args[i + 1]);
  args.splice(i, 2);
}
if (!(partMiB > 0 && partMiB <= 25)) throw new Error('--part-mib must be in (0, 25]');
const src = resolve(args[0] ?? join(repo, 'models/classifier'));
const dest = resolve(args[1] ?? join(repo, 'www/edge/model'));

const manifest = JSON.parse(await readFile(join(src, 'manifest.json'), 'utf8'));
const weights = await readFile(join(src, 'model.gguf'));
const sha = createHash('sha256').update(weights).digest('hex');
const expected = manifest.files?.['model.gguf']?.sha256;
if (expected && expected !== sha) throw new Error(`model.gguf sha256 ${sha} differs from the manifest's ${expected}`);

// Files whose bytes are unchanged are left alone: `wrangler dev` runs this as its build step while it watches the
// assets directory, and a rewrite there restarts the worker (dropping a request in flight).
await mkdir(dest, { recursive: true });
async function writeIfChanged(name, bytes) {
  const old = await readFile(join(dest, name)).catch(() => null);
  if (old && Buffer.compare(old, bytes) === 0) return false;
  await writeFile(join(dest, name), bytes);
  return true;
}
const size = Math.floor(partMiB * 1024 * 1024);
const parts = [];
for (let o = 0, n = 0; o < weights.length; o += size, n++) {
  const chunk = weights.subarray(o, Math.min(o + size, weights.length));
  parts.push({ name: `model.gguf.part-${String(n).padStart(3, '0')}`, bytes: chunk.length, sha256: createHash('sha256').update(chunk).digest('hex'), chunk });
}
const keep = new Set(['model.gguf.parts.json', ...parts.map((p) => p.name)]);
for (const f of await readdir(dest)) if (/^model\.gguf/.test(f) && !keep.has(f)) await rm(join(dest, f));
let written = 0;
for (const f of ['manifest.json', 'tokenizer.json']) written += await writeIfChanged(f, await readFile(join(src, f)));
for (const p of parts) written += await writeIfChanged(p.name, p.chunk);
const index = { file: 'model.gguf', bytes: weights.length, sha256: sha, parts: parts.map(({ chunk, ...p }) => p) };
written += await writeIfChanged('model.gguf.parts.json', Buffer.from(JSON.stringify(index, null, 1) + '\n'));
console.log(`${dest}: manifest.json, tokenizer.json, ${parts.length} weight parts of <= ${partMiB} MiB (${weights.length} bytes); ${written} file(s) written`);
