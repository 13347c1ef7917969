"""Two exported classifiers on the same evaluation splits, through the native runtime (what ships), each at its own
manifest threshold: F1, precision, recall, FPR and AUPRC per split and language, with a paired bootstrap interval
for the F1 difference.

    python training/eval/compare.py --a models/classifier --b DIR [--splits dev test ood_test] [--out F.json]

Used to check that a retrained classifier (e.g. with reply rows, training/classifier/replies.py) keeps its quality
on messages; the splits are the classifier's own (training/data/build/unified.jsonl), never the hidden benchmarks.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classifier.data import load_split  # noqa: E402
from eval.metrics import at_threshold, paired_bootstrap  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def scores(binary, model, rows):
    lines = "".join(json.dumps({"id": i, "text": r["text"]}, ensure_ascii=False) + "\n" for i, r in enumerate(rows))
    res = subprocess.run([binary, "classify", "--jsonl", "--model", str(model)], input=lines, capture_output=True,
                         text=True, check=True)
    out = np.full(len(rows), np.nan)
    for line in res.stdout.splitlines():
        v = json.loads(line)
        if "verdict" in v:
            out[v["id"]] = v["verdict"]["score"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", default=str(REPO / "models/classifier"))
    ap.add_argument("--b", required=True)
    ap.add_argument("--data", default=str(REPO / "training/data/build/unified.jsonl"))
    ap.add_argument("--splits", nargs="+", default=["dev", "test", "ood_test"])
    ap.add_argument("--bin", default=str(REPO / "target/release/slm-guard"))
    ap.add_argument("--out")
    a = ap.parse_args()
    thr = {m: json.loads((Path(m) / "manifest.json").read_text())["thresholds"]["unsafe"] for m in (a.a, a.b)}
    result = {"a": a.a, "b": a.b, "thresholds": thr}
    for split in a.splits:
        rows = load_split(a.data, [split])
        sa, sb = scores(a.bin, a.a, rows), scores(a.bin, a.b, rows)
        for lang in ("ko", "en"):
            sel = np.array([r["lang"] == lang for r in rows]) & ~np.isnan(sa) & ~np.isnan(sb)
            y = np.array([r["unsafe"] for r in rows])[sel].astype(bool)
            ma, mb = at_threshold(y, sa[sel], thr[a.a]), at_threshold(y, sb[sel], thr[a.b])
            ci = [100 * x for x in paired_bootstrap(y, sb[sel] >= thr[a.b], sa[sel] >= thr[a.a])["f1_ci95"]]
            result[f"{split}/{lang}"] = {"a": ma, "b": mb, "f1_b_minus_a_ci": ci}
            print(f"{split}/{lang} n={sel.sum()}: F1 {100 * ma['f1']:.1f} -> {100 * mb['f1']:.1f} "
                  f"[{ci[0]:+.1f}, {ci[1]:+.1f}], FPR {100 * ma['fpr']:.1f} -> {100 * mb['fpr']:.1f}, "
                  f"AUPRC {100 * ma['auprc']:.1f} -> {100 * mb['auprc']:.1f}", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
