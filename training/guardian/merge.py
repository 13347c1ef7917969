"""Interpolate two fine-tuned guardians in weight space (WiSE-FT style) into a checkpoint export.py takes.

Why: the whole-decoder continuations (w2) rank the hard cases better than the shipped guardian but write worse
replies; both start from the same base, so a point on the line between them may keep most of each. Each side is a
delta.gguf (dequantized, as the runtime sees it) or a train.py checkpoint; layers one side did not train are the
base's. `--alpha` is the weight of `--b`: 0 gives `--a`, 1 gives `--b`.

    python training/guardian/merge.py --a models/guardian/delta.gguf \
        --b training/runs/guardian_w2/best.pt --alpha 0.5 --out training/runs/guardian_m50/best.pt
"""
import argparse
import copy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.guardian.gemma3 import load_gguf  # noqa: E402
from training.guardian.train import BASE_GGUF, apply_state, state_from_delta  # noqa: E402


def load_state(path):
    path = Path(path)
    if path.suffix == ".gguf":
        return state_from_delta(path), {"source": str(path)}
    ck = torch.load(path, weights_only=False)
    return ck["state"], {"source": str(path), "step": ck.get("step"), "args": ck.get("args")}


def merged_state(base, a, b, alpha):
    """The trainable tensors of (1 - alpha) * A + alpha * B, as train.py's checkpoints hold them."""
    if not torch.equal(a["special_ids"], b["special_ids"]):
        sys.exit("the two guardians use different special-token ids; they cannot be merged")
    ma, mb = apply_state(copy.deepcopy(base), a), apply_state(copy.deepcopy(base), b)
    first = min(a["first"], b["first"])

    def mix(x, y):
        return ((1 - alpha) * x.float() + alpha * y.float()).contiguous()

    state = {"special_ids": a["special_ids"], "first": first,
             "special_rows": mix(a["special_rows"], b["special_rows"]),
             "output_norm": mix(ma.output_norm.detach(), mb.output_norm.detach())}
    for i in range(first, base.cfg.layers):
        sa, sb = ma.blk[i].state_dict(), mb.blk[i].state_dict()
        for k in sa:
            state[f"blk.{i}.{k}"] = mix(sa[k], sb[k])
    return state


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="delta.gguf or train.py checkpoint (alpha 0)")
    ap.add_argument("--b", required=True, help="delta.gguf or train.py checkpoint (alpha 1)")
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--out", required=True, help="checkpoint to write (export.py --checkpoint)")
    a = ap.parse_args()
    if not 0.0 <= a.alpha <= 1.0:
        sys.exit(f"--alpha must be in [0, 1], got {a.alpha}")
    torch.set_grad_enabled(False)
    base, _ = load_gguf(BASE_GGUF)
    (sa, ia), (sb, ib) = load_state(a.a), load_state(a.b)
    state = merged_state(base, sa, sb, a.alpha)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "step": 0, "args": {"merge": {"a": ia, "b": ib, "alpha": a.alpha}}}, out)
    print(f"wrote {out}: (1 - {a.alpha}) * {a.a} + {a.alpha} * {a.b}, layers {state['first']}..")


if __name__ == "__main__":
    main()
