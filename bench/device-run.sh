#!/usr/bin/env bash
# The WebGPU benchmarks on the device tool's GPU machine, from what bench/device-prep.sh packed into bench/device/
# (carried): the classifier's CPU path vs WebGPU at batch 1/8/64 x 64 tokens, then the guardian's verdict and decode
# speed on both, on a stand-in with the shipped layout (benches/guardian_backends.rs says why its timings are the
# shipped model's). Writes webgpu.json, webgpu-guardian.json and device.log to $OUT (or bench/results/ elsewhere).
# It also runs on any Linux machine with a Vulkan adapter (lavapipe here: slow, but it checks the script).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
out=${OUT:-bench/results}
mkdir -p "$out"
exec > >(tee "$out/device.log") 2>&1
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

# The Vulkan loader: only where the image has none (unpacking packages over / elsewhere could break a machine).
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  for f in bench/device/libvulkan1_*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
# the NVIDIA driver's Vulkan ICD, where the loader does not find it by itself
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/ 2>/dev/null | grep -q nvidia; then
  export VK_DRIVER_FILES=$icd
fi

bin=$(mktemp -d)
tar -C "$bin" -xJf bench/device/benches.tar.xz
# the model files git keeps packed (training/common/packed.py: standard-library Python, sha256-checked)
python3 training/common/packed.py expand models/classifier models/guardian

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
lscpu | grep -m1 'Model name' || true
"$bin/bin/backends" --model models/classifier --runs "${RUNS:-15}" --out "$out/webgpu.json"
"$bin/bin/guardian_backends" --model models/guardian --stand-in bench/device/guardian-layout.gguf \
  ${GUARDIAN_RUNS:+--runs "$GUARDIAN_RUNS"} ${GUARDIAN_TOKENS:+--tokens "$GUARDIAN_TOKENS"} \
  --out "$out/webgpu-guardian.json"
echo "done: $out/webgpu.json $out/webgpu-guardian.json"
