"""What vocabulary pruning and int8 quantization cost the guardian, measured on dev rows.

  1. fine-tuned checkpoint, fp32, full 262k vocabulary, base tokenizer (PyTorch)        -- before
  2. shipped files: pruned vocabulary + row-scaled Q8_0, through the native runtime    -- after
Without the checkpoint (training/runs/ is not in git), "before" is the base model with the committed delta's tensors
put in (the trained blocks dequantized from their Q8_0): it then measures pruning, the re-quantization of the frozen
blocks and the runtime's int8 arithmetic, but not the rounding of the trained blocks themselves.
Pruning can only change the classify score through tokenization (the score reads two fixed rows), so the share of
queries whose ids change under the pruned tokenizer is reported with it; quantization shows as the score difference.
Writes training/runs/guardian/quant.json, or --out ({"rows": ..., "markdown": ...}), for card.py.

    python training/guardian/quant_cost.py [--rows 600] [--checkpoint RUN/best.pt --out RUN/quant.json]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.eval.metrics import at_threshold, auprc  # noqa: E402
from training.guardian.eval import DATA, cli_guardian_scores, guardian_scores, rows_of  # noqa: E402
from training.guardian.gemma3 import load_gguf, load_tokenizer  # noqa: E402
from training.guardian.train import BASE_GGUF, BASE_TOKENIZER, RUN, apply_state, state_from_delta  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(RUN / "best.pt"))
    ap.add_argument("--model", default=str(ROOT / "models/guardian"))
    ap.add_argument("--bin", default=str(ROOT / "target/release/slm-guard"))
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--out", default=str(RUN / "quant.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = rows_of(DATA, "dev")
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in sorted(rng.choice(len(rows), min(a.rows, len(rows)), replace=False))]
    y = np.array([r["unsafe"] for r in rows])
    model, _ = load_gguf(BASE_GGUF)
    from_checkpoint = Path(a.checkpoint).is_file()
    if from_checkpoint:
        apply_state(model, torch.load(a.checkpoint, weights_only=False)["state"])
    else:
        print(f"{a.checkpoint} not found: 'before' is the base model + the committed delta", flush=True)
        apply_state(model, state_from_delta(Path(a.model) / "delta.gguf"))
    base_tok = load_tokenizer(BASE_TOKENIZER)
    before, _ = guardian_scores(model, base_tok, rows)
    after, _, refused = cli_guardian_scores(rows, a.bin, a.model)
    keep = ~refused
    # tokenization: same pieces under the pruned tokenizer? (compare decoded pieces, ids differ by construction)
    pruned_tok = load_tokenizer(Path(a.model) / "tokenizer.json")
    from training.common.normalize import normalize
    changed = np.mean([base_tok.encode(normalize(r["text"]), add_special_tokens=False).tokens
                       != pruned_tok.encode(normalize(r["text"]), add_special_tokens=False).tokens for r in rows])
    t = json.loads((Path(a.model) / "manifest.json").read_text())["thresholds"].get("unsafe", 0.5)
    res = {"rows": int(keep.sum()), "threshold": t, "before_source": "checkpoint" if from_checkpoint else "delta", "tokenization_changed": float(changed),
           "mean_abs_score_diff": float(np.abs(before[keep] - after[keep]).mean()),
           "max_abs_score_diff": float(np.abs(before[keep] - after[keep]).max()),
           "decision_flips": int(((before[keep] >= t) != (after[keep] >= t)).sum())}
    for name, p in (("before", before), ("after", after)):
        m = at_threshold(y[keep], p[keep], t)
        res[name] = {"f1": m["f1"], "auprc": auprc(y[keep], p[keep]), "fpr": m["fpr"], "recall": m["recall"]}
    b, f = res["before"], res["after"]
    res["markdown"] = (
        f"{res['rows']} random dev rows, threshold {t:.2f}. Before: "
        + ("the fine-tuned checkpoint in fp32 with the full 262k vocabulary (PyTorch)." if from_checkpoint else
           "the base model in fp32 with the committed delta put in (trained blocks dequantized from Q8_0; the fp32 "
           "checkpoint of this run was not kept), full 262k vocabulary (PyTorch); so the rounding of the trained "
           "blocks is not in this comparison.")
        + f" After: the shipped files (pruned vocabulary, row-scaled Q8_0) in the native "
        f"runtime.\n\n| | F1 | AUPRC | recall | FPR |\n|---|---|---|---|---|\n"
        f"| before | {100 * b['f1']:.1f} | {b['auprc']:.3f} | {100 * b['recall']:.1f} | {100 * b['fpr']:.1f} |\n"
        f"| after | {100 * f['f1']:.1f} | {f['auprc']:.3f} | {100 * f['recall']:.1f} | {100 * f['fpr']:.1f} |\n\n"
        f"Pruning changed the tokenization of {100 * changed:.1f} % of these queries (pieces outside the kept "
        f"vocabulary fall back to shorter pieces or bytes). Score difference after/before: mean "
        f"{res['mean_abs_score_diff']:.4f}, max {res['max_abs_score_diff']:.4f}; {res['decision_flips']} decisions "
        f"flip at the threshold.")
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(res["markdown"])


if __name__ == "__main__":
    main()
