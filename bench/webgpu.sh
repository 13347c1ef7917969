#!/usr/bin/env bash
# CPU path vs WebGPU backend (native wgpu: Vulkan) at batch 1/8/64 x 64 tokens, then the guardian's verdict and
# decode speed on both; the one prepared script for a GPU machine. Writes bench/results/webgpu*.json and prints
# Markdown tables for BENCHMARKS.md.
# On a machine without a GPU, `apt-get install mesa-vulkan-drivers` gives the lavapipe software adapter.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
mkdir -p bench/results
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
lscpu | grep -m1 'Model name' || true
cargo bench --bench backends -- --runs "${RUNS:-15}" --out bench/results/webgpu.json
# the guardian (models/guardian/model.gguf, assembled by scripts/setup.sh): verdict and decode speed per backend
cargo bench --bench guardian_backends -- --out bench/results/webgpu-guardian.json
