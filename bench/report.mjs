// Writes the runtime and guardian sections of BENCHMARKS.md (between their markers) from bench/results/*.json.
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const r = (f) => JSON.parse(readFileSync(new URL(`results/${f}`, import.meta.url)));
const t = (f) => readFileSync(new URL(`results/${f}`, import.meta.url), 'utf8').trim();
const native = r('native.json');
const wasm = r('wasm-node.json');
const peak = r('simd-peak.json');
const manifest = JSON.parse(readFileSync(new URL('../models/classifier/manifest.json', import.meta.url)));
const a = manifest.architecture;
// multiply-adds of one window of n tokens: 4 h^2 (q,k,v,out) + 2 h f (ffn) per token per layer, attention 2 n h per
// token per layer, plus the head
const macs = (n) => a.layers * (n * (4 * a.hidden * a.hidden + 2 * a.hidden * a.ffn) + 2 * n * n * a.hidden) + a.hidden * manifest.labels.length;
const row = (l) => `| ${l.target_tokens} | ${l.tokens} | ${l.windows} | ${l.median_ms.toFixed(1)} | ${l.p95_ms.toFixed(1)} |`;
const at = (list, n) => list.find((l) => l.target_tokens === n);
const w32 = at(wasm.latency, 32);
const gmacs = (l) => (macs(l.tokens) / (l.median_ms / 1e3) / 1e9).toFixed(1);
const lines = [
  '<!-- runtime:begin -->',
  '',
  `Machine: ${t('cpu.txt')}, 2 cores, no GPU; everything single-threaded. Model: \`${native.model}\` `,
  `(${(native.weights_bytes / 2 ** 20).toFixed(1)} MiB weights + ${(native.tokenizer_bytes / 2 ** 20).toFixed(1)} MiB tokenizer). Command: \`bench/run.sh\`.`,
  '',
  '### Latency per message (median / p95 over repeated runs, after warm-up)',
  '',
  '**Native** (`slm-guard bench --threads 1`, x86_64, AVX2 or AVX-512 VNNI int8 kernels, whichever the CPU has)',
  '',
  '| target tokens | tokens run | windows | median ms | p95 ms |', '|---|---|---|---|---|',
  ...native.latency.map(row),
  '',
  `**wasm32 + simd128 in Node** (\`bench/wasm-bench.mjs\`, ${wasm.runtime})`,
  '',
  '| target tokens | tokens run | windows | median ms | p95 ms |', '|---|---|---|---|---|',
  ...wasm.latency.map(row),
  '',
  '| | native | wasm (Node) |', '|---|---|---|',
  `| model load (verify sha256 + parse), median | ${native.load_ms_median.toFixed(0)} ms | ${wasm.load_ms_median.toFixed(0)} ms |`,
  `| batch of 64 x ~32 tokens, messages/s | ${native.throughput_msgs_per_s_batch64_32tok.toFixed(0)} | ${wasm.throughput_msgs_per_s_batch64_32tok.toFixed(0)} |`,
  `| peak RSS | ${native.peak_rss_mb?.toFixed(0)} MiB | ${wasm.rss_mb.toFixed(0)} MiB (Node process) |`,
  `| wasm module | | ${(Number(t('wasm-bytes.txt')) / 1e6).toFixed(2)} MB raw, ${(Number(t('wasm-brotli-bytes.txt')) / 1e6).toFixed(2)} MB brotli |`,
  '',
  '### How far from the machine\'s limit',
  '',
  `One ${w32.tokens}-token window costs ${(macs(w32.tokens) / 1e6).toFixed(0)} M multiply-adds (${(macs(16) / 1e6).toFixed(0)} M at 16 tokens, ` +
    `${(macs(64) / 1e6).toFixed(0)} M at 64; ~${((4 * a.hidden * a.hidden + 2 * a.hidden * a.ffn) * a.layers / 1e6).toFixed(1)} M per token in the linear layers plus attention).`,
  `This machine's single-thread wasm simd128 peak (\`bench/simd-peak.mjs\`: independent chains of one instruction, no loads): ` +
    `**${peak.int8_dot_gmacs.toFixed(1)} G int8 multiply-adds/s** (\`i32x4.dot_i16x8_s\`) and ${peak.f32_gmacs.toFixed(1)} G f32 multiply-adds/s.`,
  `The classifier in wasm sustains ${gmacs(w32)} G multiply-adds/s at ${w32.tokens} tokens and ${gmacs(at(wasm.latency, 64))} at 64, ` +
    `i.e. ${((100 * Number(gmacs(w32))) / peak.int8_dot_gmacs).toFixed(0)} % of that int8 peak; natively ${gmacs(at(native.latency, 64))} G/s at 64 tokens.`,
  '',
  '<!-- runtime:end -->',
];
const path = new URL('../BENCHMARKS.md', import.meta.url);
let text = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n\n<!-- runtime:begin -->\n<!-- runtime:end -->\n';
const put = (name, body) => {
  const [b, e] = [`<!-- ${name}:begin -->`, `<!-- ${name}:end -->`];
  if (!text.includes(b)) text += `\n${b}\n${e}\n`;
  text = text.slice(0, text.indexOf(b)) + body.join('\n') + text.slice(text.indexOf(e) + e.length);
};
put('runtime', lines);
console.log(lines.join('\n'));

// The guardian (Gemma 3 270M): verdict = one forward pass over <bos> query <|pred|>; replies decoded greedily.
if (existsSync(new URL('results/guardian-native.json', import.meta.url)) && existsSync(new URL('results/guardian-wasm-node.json', import.meta.url))) {
  const gn = r('guardian-native.json');
  const gw = r('guardian-wasm-node.json');
  const g = [
    '<!-- guardian:begin -->',
    '',
    `Machine: ${t('cpu.txt')}, 2 cores, no GPU; single thread. Model: \`${gn.model}\` (${(gn.weights_bytes / 1e6).toFixed(1)} MB weights + ` +
      `${(gn.tokenizer_bytes / 1e6).toFixed(1)} MB tokenizer). Commands: \`slm-guard --threads 1 --model models/guardian bench\`, \`node bench/guardian-bench.mjs\` (both in \`bench/run.sh\`).`,
    '',
    '| verdict (classify format), query tokens | native median / p95 ms | wasm (Node) median / p95 ms |', '|---|---|---|',
    ...gn.verdict_latency.map((n) => {
      const w = gw.verdict_latency.find((x) => x.target_tokens === n.target_tokens);
      return `| ~${n.target_tokens} (${n.tokens} run) | ${n.median_ms.toFixed(0)} / ${n.p95_ms.toFixed(0)} | ${w ? `${w.median_ms.toFixed(0)} / ${w.p95_ms.toFixed(0)}` : 'n/a'} |`;
    }),
    '',
    '| | native | wasm (Node) |', '|---|---|---|',
    `| greedy decode, tokens/s (median) | ${gn.decode_tokens_per_s.toFixed(1)} | ${gw.decode_tokens_per_s_median.toFixed(1)} |`,
    `| the same through the reply gate (classifier checks each sentence), tokens/s | | ${gw.gated_tokens_per_s_median?.toFixed(1) ?? 'n/a'} |`,
    `| first piece of a reply (prompt read + 1 token), median | | ${gw.first_token_ms_median.toFixed(0)} ms |`,
    `| load (verify sha256 + parse; wasm: classifier + guardian) | ${gn.load_ms_median.toFixed(0)} ms | ${gw.load_ms.toFixed(0)} ms |`,
    `| peak RSS | ${gn.peak_rss_mb?.toFixed(0)} MiB | ${gw.rss_mb.toFixed(0)} MiB (Node process) |`,
    '',
    'Targets from the guardian issue (this machine, wasm CPU): a verdict under 400 ms for a ~32-token query; at least 15 generated tokens/s. ' +
      `Measured: ${gw.verdict_latency.find((x) => x.target_tokens === 32)?.median_ms.toFixed(0)} ms and ${gw.decode_tokens_per_s_median.toFixed(1)} tokens/s.`,
    '',
    '<!-- guardian:end -->',
  ];
  put('guardian', g);
  console.log(g.join('\n'));
}
writeFileSync(path, text);
