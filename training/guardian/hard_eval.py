"""The hard-case comparison on the classifier's whole dev and test splits (~16,000 rows each), not on eval.py's
2,500-row subsets: about seven times the hard rows, so a gap of two or three points is no longer lost in sampling
noise (on the subsets, ~330 hard rows per split, the 95 % interval of a difference is about +-5 points).

The shipped classifier scores every row (CLI, cached per split with the classifier's sha256); the rows inside a
guardian's cascade band (its manifest's `cascade_band`, chosen by eval.py on the dev subset; `--band` to override)
go to that guardian through the runtime (`slm-guard classify --jsonl --model DIR`), at its manifest's threshold.
The guardian never trained on these splits (data.py keeps every unified dev/test query out of its train file).
Per split and model: F1, accuracy, FPR and ROC AUC of both models on the hard rows, the paired bootstrap of guardian
minus classifier (F1 and accuracy), and the guardian-alone cascade against the classifier alone on the whole split
(paired bootstrap too). The hard rows' scores are kept in the output: fusion.py fits the shipped band rule from them.

    python training/guardian/hard_eval.py --model models/guardian [--model DIR ...] [--out FILE]
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.eval.metrics import at_threshold  # noqa: E402
from training.guardian.eval import classifier_scores, cli_guardian_scores, paired_bootstrap  # noqa: E402

UNIFIED = ROOT / "training/data/build/unified.jsonl"
CACHE = ROOT / "training/runs/hard_eval"


def split_rows():
    """The classifier's dev and test rows, in file order (one pass over the 170k-row unified file)."""
    out = {"dev": [], "test": []}
    for r in map(json.loads, open(UNIFIED, encoding="utf-8")):
        if r["split"] in out:
            out[r["split"]].append(r)
    return out


def cached_classifier_scores(split, rows, binary):
    """The classifier's scores of a whole split, computed once per classifier file (~16k rows take minutes)."""
    sha = hashlib.sha256((ROOT / "models/classifier/model.gguf").read_bytes()).hexdigest()
    path = CACHE / f"classifier_{split}.json"
    if path.is_file():
        got = json.loads(path.read_text())
        if got["sha256"] == sha and got["ids"] == [r["id"] for r in rows]:
            return np.array(got["scores"])
    t0 = time.time()
    scores = classifier_scores(rows, binary)
    print(f"classifier: {split} {len(rows)} rows in {time.time() - t0:.0f} s", flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sha256": sha, "ids": [r["id"] for r in rows], "scores": scores.tolist()}))
    return scores


def pct(v):
    return round(100 * v, 1)


def compare(y, c, g, hard, t_cls, t_g, langs):
    """Both models on the hard rows (`g` is only read there) and the cascade against the classifier alone."""
    yh, ch, gh = y[hard], c[hard], g[hard]
    cls_h, grd_h = at_threshold(yh, ch, t_cls), at_threshold(yh, gh, t_g)
    boot = paired_bootstrap(yh, gh >= t_g, ch >= t_cls)
    cascade = np.where(hard, g >= t_g, c >= t_cls).astype(float)
    alone, casc = at_threshold(y, c, t_cls), at_threshold(y, cascade, 0.5)
    return {
        "n": int(len(y)), "hard": int(hard.sum()),
        "hard_by_lang": {lang: int((hard & (langs == lang)).sum()) for lang in ("ko", "en")},
        "hard_unsafe_share": float(yh.mean()),
        "hard_classifier": {**cls_h, "accuracy": float(((ch >= t_cls) == yh).mean()), "roc_auc": float(roc_auc_score(yh, ch))},
        "hard_guardian": {**grd_h, "accuracy": float(((gh >= t_g) == yh).mean()), "roc_auc": float(roc_auc_score(yh, gh))},
        "hard_guardian_minus_classifier": boot,
        "classifier_alone": alone, "cascade": casc,
        # the same paired bootstrap over the whole split: is the cascade's F1 different from the classifier's?
        "cascade_minus_classifier": paired_bootstrap(y, cascade, c >= t_cls),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, help="exported guardian dir (repeatable)")
    ap.add_argument("--band", type=float, nargs=2, help="override the manifests' cascade band")
    ap.add_argument("--bin", default=str(ROOT / "target/release/slm-guard"))
    ap.add_argument("--out", default=str(CACHE / "hard_eval.json"))
    a = ap.parse_args()
    t_cls = json.loads((ROOT / "models/classifier/manifest.json").read_text())["thresholds"]["unsafe"]
    result = {"classifier_threshold": t_cls, "models": {}}
    splits = {}
    for split, rows in split_rows().items():
        splits[split] = (rows, np.array([r["unsafe"] for r in rows]), cached_classifier_scores(split, rows, a.bin),
                         np.array([r["lang"] for r in rows]))
    for model in a.model:
        thresholds = json.loads((Path(model) / "manifest.json").read_text())["thresholds"]
        band, t_g = a.band or thresholds["cascade_band"], thresholds["unsafe"]
        out = {"band": band, "guardian_threshold": t_g}
        for split, (rows, y, c, langs) in splits.items():
            hard = (c > band[0]) & (c < band[1])
            idx = np.flatnonzero(hard)
            t0 = time.time()
            g_hard, _, refused = cli_guardian_scores([rows[i] for i in idx], a.bin, model)
            g = np.zeros(len(rows))
            g[idx] = np.where(refused, c[idx], g_hard)  # over 512 tokens: the classifier's verdict stands
            out[split] = {**compare(y, c, g, hard, t_cls, t_g, langs), "guardian_refused": int(refused.sum()),
                          "guardian_seconds": round(time.time() - t0, 1),
                          # per hard row, for re-analysis without re-running the guardian
                          "hard_rows": [{"id": rows[i]["id"], "classifier": round(float(c[i]), 5),
                                         "guardian": round(float(g[i]), 5)} for i in idx]}
            d = out[split]["hard_guardian_minus_classifier"]
            hc, hg = out[split]["hard_classifier"], out[split]["hard_guardian"]
            print(f"{model} {split}: {len(idx)} hard rows of {len(rows)} ({time.time() - t0:.0f} s); F1 classifier "
                  f"{pct(hc['f1'])} guardian {pct(hg['f1'])}, diff {pct(d['f1_diff']):+} "
                  f"[{pct(d['f1_ci95'][0]):+}, {pct(d['f1_ci95'][1]):+}]; accuracy {pct(hc['accuracy'])} vs "
                  f"{pct(hg['accuracy'])}, diff {pct(d['accuracy_diff']):+} [{pct(d['accuracy_ci95'][0]):+}, "
                  f"{pct(d['accuracy_ci95'][1]):+}]; ROC AUC {hc['roc_auc']:.3f} vs {hg['roc_auc']:.3f}; "
                  f"cascade F1 {pct(out[split]['cascade']['f1'])} vs classifier {pct(out[split]['classifier_alone']['f1'])}"
                  f" (diff [{pct(out[split]['cascade_minus_classifier']['f1_ci95'][0]):+}, "
                  f"{pct(out[split]['cascade_minus_classifier']['f1_ci95'][1]):+}])", flush=True)
        result["models"][model] = out
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
