"""How the two models rank the rows inside each candidate cascade band, from eval.py's per-row `scores.jsonl`.

Per band and split: the rows the classifier is unsure about, the ROC AUC of each model's score on them (threshold
free: which model orders the hard rows better), and the guardian-minus-classifier F1 and accuracy (paired
bootstrap) when each model gets the threshold that is best on that band's dev rows.

    python training/guardian/band_analysis.py [training/runs/guardian/scores.jsonl]
"""
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.eval.metrics import best_threshold  # noqa: E402
from training.guardian.eval import BANDS, paired_bootstrap  # noqa: E402


def main():
    path = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "training/runs/guardian/scores.jsonl")
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    for band in BANDS:
        sel = {}
        for split in ("dev", "test"):
            r = [x for x in rows if x["split"] == split and band[0] < x["classifier"] < band[1]]
            sel[split] = tuple(np.array([x[k] for x in r]) for k in ("unsafe", "classifier", "guardian"))
        y, c, g = sel["dev"]
        t_c, t_g = best_threshold(y, c), best_threshold(y, g)
        for split, (y, c, g) in sel.items():
            d = paired_bootstrap(y, g >= t_g, c >= t_c)
            print(f"band {band} {split}: {len(y)} rows, {100 * y.mean():.0f} % unsafe; ROC AUC classifier "
                  f"{roc_auc_score(y, c):.3f} guardian {roc_auc_score(y, g):.3f}; in-band thresholds "
                  f"{t_c:.2f} / {t_g:.2f}: guardian - classifier F1 {100 * d['f1_diff']:+.1f} "
                  f"[{100 * d['f1_ci95'][0]:+.1f}, {100 * d['f1_ci95'][1]:+.1f}], accuracy "
                  f"{100 * d['accuracy_diff']:+.1f} [{100 * d['accuracy_ci95'][0]:+.1f}, "
                  f"{100 * d['accuracy_ci95'][1]:+.1f}]")


if __name__ == "__main__":
    main()
