#!/usr/bin/env bash
# Main job: set up, build the native CLI and the wasm package, then serve the demo on http://127.0.0.1:${PORT:-8080}/
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
scripts/setup.sh
cargo build --release -j 2 --bin slm-guard
scripts/build-pkg.sh
echo "CLI: target/release/slm-guard classify \"안녕하세요\"   (uses models/classifier)"
exec node scripts/serve.mjs
