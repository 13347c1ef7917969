#!/usr/bin/env bash
# Every test: Rust unit + integration (native, on the shipped model), the wasm package in Node (node --test),
# wasm-bindgen tests, browser and edge-runtime tests where present. Installs what it needs first.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} DENO_NO_UPDATE_CHECK=1
scripts/setup.sh --test
echo "== cargo fmt / clippy-free build"
cargo fmt --all -- --check
echo "== Rust tests (native; the WebGPU tests run on Mesa's lavapipe Vulkan adapter)"
cargo test --release -j 2
echo "== wasm package"
scripts/build-pkg.sh
echo "== wasm-bindgen tests: the Rust API as wasm32+simd128, in Node and in headless Chromium"
cargo test --release -j 2 --target wasm32-unknown-unknown --no-default-features --test wasm_node
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} \
  cargo test --release -j 2 --target wasm32-unknown-unknown --no-default-features --test wasm_browser
echo "== WebGPU backend vs the CPU path in headless Chromium (SwiftShader, --enable-unsafe-webgpu)"
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} WASM_BINDGEN_TEST_TIMEOUT=300 \
  cargo test --release -j 2 --target wasm32-unknown-unknown --no-default-features --features webgpu --test wasm_webgpu
echo "== JS API (Node), Deno and workerd, edge worker, demo page in Chromium"
node --test --test-concurrency=1 tests/js/ tests/edge/ tests/e2e/
echo "== demo page again with WebGPU enabled in Chromium"
SLM_GUARD_E2E_WEBGPU=1 node --test tests/e2e/
echo "all tests passed"
