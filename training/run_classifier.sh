#!/usr/bin/env bash
# Retrain and re-export the shipped classifier from scratch:
#   data (if not built) -> fine-tune (resumable) -> prune + quantize + export -> the reply check (the top layers
#   retrained on rated guardian replies, ~30 min) -> baseline -> evaluation + model card.
# Re-run the same command after an interruption: training resumes from training/runs/classifier/last.pt, the reply
# check from its checkpoints under training/runs/reply_head.
# Extra arguments go to train.py (e.g. --epochs 1.5). Use `--fresh` to delete the previous run first.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
if [ "${1:-}" = "--fresh" ]; then rm -rf training/runs/classifier; shift; fi
training/setup.sh
py=training/.venv/bin/python
[ -f training/data/build/unified.jsonl ] || $py training/data/build.py
start=$(date +%s)
$py training/classifier/train.py "$@"
$py training/classifier/export.py
$py training/classifier/reply_head.py export
$py training/eval/baseline.py
$py training/eval/report.py
echo "classifier pipeline finished in $(( ($(date +%s) - start) / 60 )) min"
