#!/usr/bin/env bash
# Runtime benchmarks on the shipped classifier and guardian (single thread, this machine), written to bench/results/ and summarised
# into BENCHMARKS.md by bench/report.mjs. Needs the native CLI and pkg/ built (scripts/serve.sh or scripts/test.sh).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
mkdir -p bench/results
cargo build --release -j 2 --bin slm-guard
target/release/slm-guard --threads 1 bench --iters "${ITERS:-100}" --out bench/results/native.json >/dev/null
node bench/wasm-bench.mjs --iters "${ITERS:-100}" --out bench/results/wasm-node.json >/dev/null
node bench/simd-peak.mjs > bench/results/simd-peak.json
if [ -f models/guardian/model.gguf ]; then   # the guardian (assembled by scripts/setup.sh)
  target/release/slm-guard --threads 1 --model models/guardian bench --out bench/results/guardian-native.json >/dev/null
  node bench/guardian-bench.mjs --out bench/results/guardian-wasm-node.json >/dev/null
fi
brotli -c -q 11 pkg/slm_guard_bg.wasm 2>/dev/null | wc -c > bench/results/wasm-brotli-bytes.txt || \
  node -e "const z=require('zlib');const b=require('fs').readFileSync('pkg/slm_guard_bg.wasm');console.log(z.brotliCompressSync(b,{params:{[z.constants.BROTLI_PARAM_QUALITY]:11}}).length)" > bench/results/wasm-brotli-bytes.txt
stat -c %s pkg/slm_guard_bg.wasm > bench/results/wasm-bytes.txt
lscpu | grep -m1 'Model name' | sed 's/Model name:\s*//' > bench/results/cpu.txt
node bench/report.mjs
