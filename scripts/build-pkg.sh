#!/usr/bin/env bash
# Build the npm package into pkg/: Rust -> wasm32 (simd128) -> wasm-bindgen (--target web: browsers, Node, Deno and
# workerd all load it) -> wasm-opt -> copy the hand-written JS API from js/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cargo build --release -j 2 --lib --target wasm32-unknown-unknown --no-default-features --features webgpu
rm -rf pkg && mkdir -p pkg
wasm-bindgen --target web --out-dir pkg --out-name slm_guard target/wasm32-unknown-unknown/release/slm_guard.wasm
npx --no-install wasm-opt -O3 --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int \
  --enable-sign-ext --enable-mutable-globals pkg/slm_guard_bg.wasm -o pkg/slm_guard_bg.wasm
cp js/index.js js/index.d.ts js/worker.js pkg/
version=$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)
cat > pkg/package.json <<JSON
{
  "name": "slm-guard",
  "version": "$version",
  "description": "Bilingual (Korean + English) client-side safety guard for chat messages (wasm, WebGPU)",
  "license": "Apache-2.0",
  "type": "module",
  "main": "index.js",
  "types": "index.d.ts",
  "exports": { ".": { "types": "./index.d.ts", "default": "./index.js" }, "./worker.js": "./worker.js" },
  "files": ["index.js", "index.d.ts", "worker.js", "slm_guard.js", "slm_guard.d.ts", "slm_guard_bg.wasm", "slm_guard_bg.wasm.d.ts"],
  "sideEffects": false
}
JSON
ls -l pkg/slm_guard_bg.wasm | awk '{print "pkg/slm_guard_bg.wasm: " $5 " bytes"}'
