"""Fine-tune multilingual-e5-small into the slm-guard classifier. Resumable: re-run the same command after an
interruption and it continues from the last checkpoint.

    python -m training.classifier.train [--run training/runs/classifier] [--epochs 2] [--threads 2]

Recipe (CPU, 2 cores, bf16 autocast): word embeddings frozen (so vocabulary pruning after training is exact and
the 96 M embedding parameters cost no optimizer state), all 12 encoder layers and the head trained with AdamW,
linear warm-up then linear decay, length-bucketed batches of 32, sequences cut to 128 tokens. Loss: BCE on `unsafe`
plus 0.5 x BCE on the nine categories (positives weighted sqrt(neg/pos)), where categories are masked for rows whose
source does not give them. Synthetic rows are repeated 3x per epoch, other rows of rare categories 2x.
After every epoch (and at the end) the model is scored on dev and ood_dev; the checkpoint with the best ood_dev
AUPRC (mean of ko and en) is kept as `best.pt`.
"""
import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classifier.data import Batches, load_split  # noqa: E402
from classifier.model import CATEGORIES, GuardClassifier  # noqa: E402
from common.assets import e5_paths  # noqa: E402
from common.e5_blob import load_state_dict  # noqa: E402
from eval.metrics import auprc  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


RARE = {"self_harm", "sexual_minors", "sexual", "privacy", "violence"}


def repeats(r):
    """Rows per epoch: the synthetic chat requests are the closest to real traffic and carry the scarce Korean
    harmful requests, so they are seen 3 times; other rows of rare categories twice."""
    if r["source"] == "synthetic":
        return 3
    if r["kind"] == "reply":  # replies.py: few next to the 128k messages
        return 2
    return 2 if r["unsafe"] and RARE & set(r["categories"]) else 1


def category_pos_weight(rows):
    """sqrt(negatives / positives) per category, clamped to [1, 20]: rare categories are not drowned out."""
    y = np.array([[c in r["categories"] for c in CATEGORIES] for r in rows if r["unsafe"] == 0 or r["cat_known"]])
    pos = y.sum(0).clip(min=1)
    return torch.tensor(np.sqrt((len(y) - pos) / pos).clip(1, 20), dtype=torch.float32)


@torch.no_grad()
def predict(model, batches):
    model.eval()
    out = np.zeros((len(batches.rows), 1 + len(CATEGORIES)), dtype=np.float32)
    for idx, ids, mask, *_ in batches.eval_batches():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, mask)
        out[idx] = torch.sigmoid(logits.float()).numpy()
    model.train()
    return out


def score(rows, probs):
    res = {}
    for lang in ("ko", "en"):
        sel = [i for i, r in enumerate(rows) if r["lang"] == lang]
        y = np.array([rows[i]["unsafe"] for i in sel])
        res[lang] = auprc(y, probs[sel, 0]) if len(sel) else float("nan")
    res["mean"] = float(np.nanmean([res["ko"], res["en"]]))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO / "training/data/build/unified.jsonl"))
    ap.add_argument("--run", default=str(REPO / "training/runs/classifier"))
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ckpt-every", type=int, default=300, help="steps between resumable checkpoints")
    ap.add_argument("--evals", type=int, default=4, help="dev/ood_dev evaluations over the run")
    ap.add_argument("--limit", type=int, default=0, help="use only N training rows (smoke test)")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    run = Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    blob, tok_path = e5_paths()
    train_rows = load_split(a.data, ["train"])
    if a.limit:
        train_rows = random.Random(a.seed).sample(train_rows, a.limit)
    dev_rows = load_split(a.data, ["dev"])
    ood_rows = load_split(a.data, ["ood_dev"])
    if a.limit:
        dev_rows, ood_rows = dev_rows[: a.limit // 4], ood_rows[: a.limit // 4]
    train = Batches(train_rows, tok_path, a.batch, a.max_len, repeats=[repeats(r) for r in train_rows])
    dev = Batches(dev_rows, tok_path, 64, a.max_len)
    ood = Batches(ood_rows, tok_path, 64, a.max_len)
    pos_weight = category_pos_weight(train_rows)
    print("category pos_weight", dict(zip(CATEGORIES, pos_weight.round(decimals=2).tolist())), flush=True)
    steps_per_epoch = train.n_batches()
    total = math.ceil(steps_per_epoch * a.epochs)
    eval_at = sorted({round(total * (k + 1) / a.evals) for k in range(a.evals)})

    cfg, sd = load_state_dict(blob)
    model = GuardClassifier(cfg)
    model.load_backbone(sd)
    model.embeddings.word_embeddings.weight.requires_grad_(False)
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW([{"params": body, "lr": a.lr}, {"params": model.head.parameters(), "lr": a.head_lr}],
                            weight_decay=0.01)
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * max(0.0, (total - s) / max(1, total - warm)))

    state = {"step": 0, "best": -1.0, "history": [], "elapsed": 0.0}
    ckpt = run / "last.pt"
    if ckpt.exists():
        c = torch.load(ckpt, weights_only=False)
        model.load_state_dict(c["model"], strict=False)
        opt.load_state_dict(c["opt"])
        sched.load_state_dict(c["sched"])
        state = c["state"]
        print(f"resumed at step {state['step']}/{total}", flush=True)
    meta = dict(config=cfg, categories=CATEGORIES, max_len=a.max_len, args=vars(a))
    (run / "meta.json").write_text(json.dumps(meta, indent=1))

    def save(path):
        trainable = {k: v for k, v in model.state_dict().items() if k != "embeddings.word_embeddings.weight"}
        torch.save({"model": trainable, "opt": opt.state_dict(), "sched": sched.state_dict(), "state": state},
                   str(path) + ".tmp")
        Path(str(path) + ".tmp").replace(path)

    model.train()
    t0, losses = time.time(), []
    for step_ids, ids, mask, y, ymask in train.train_batches(a.seed, start_step=state["step"], total=total):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, mask).float()
        loss_unsafe = F.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0])
        cat_loss = F.binary_cross_entropy_with_logits(logits[:, 1:], y[:, 1:], reduction="none", pos_weight=pos_weight)
        loss_cat = (cat_loss * ymask).sum() / ymask.sum().clamp(min=1.0)
        loss = loss_unsafe + 0.5 * loss_cat
        loss.backward()
        torch.nn.utils.clip_grad_norm_(body, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        losses.append(loss.item())
        s = state["step"]
        if s % 50 == 0:
            el = state["elapsed"] + time.time() - t0
            print(f"step {s}/{total} loss {np.mean(losses[-50:]):.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{el / 60:.1f} min", flush=True)
        if s in eval_at:
            pd, po = predict(model, dev), predict(model, ood)
            rec = {"step": s, "dev": score(dev.rows, pd), "ood_dev": score(ood.rows, po)}
            state["history"].append(rec)
            print("eval", json.dumps(rec), flush=True)
            if rec["ood_dev"]["mean"] > state["best"]:
                state["best"] = rec["ood_dev"]["mean"]
                torch.save({k: v for k, v in model.state_dict().items() if k != "embeddings.word_embeddings.weight"},
                           run / "best.pt")
        if s % a.ckpt_every == 0 or s == total:
            state["elapsed"] += time.time() - t0
            t0 = time.time()
            save(ckpt)
    (run / "history.json").write_text(json.dumps(state["history"], indent=1))
    print(f"done: {state['step']} steps, {state['elapsed'] / 60:.1f} min of training, best ood_dev AUPRC "
          f"{state['best']:.4f}", flush=True)


if __name__ == "__main__":
    main()
