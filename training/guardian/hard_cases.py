"""Mine the classifier's hard cases for the guardian: rows the shipped classifier is unsure about, scored where
the classifier never trained.

The cascade sends the guardian only the messages whose classifier score falls inside an uncertain band, so that
is where the guardian has to be better. The classifier's scores on its own training rows are over-confident (it
fitted them), so the band is read on rows it only used for model selection: the unified `dev` split, minus every
query of the guardian's evaluation sets (its dev / test / held-back files, any task, compared after normalize +
lowercase). The guardian's dev and test rows, on which the cascade is judged, stay unseen; the held-out sources
(`ood_*`) and hidden benchmarks are never read.

    python training/guardian/hard_cases.py [--low 0.1 --high 0.9]   # -> training/data/build/guardian/hard.jsonl
"""
import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.guardian.data import key  # noqa: E402
from training.guardian.eval import classifier_scores  # noqa: E402

UNIFIED = ROOT / "training/data/build/unified.jsonl"
DATA = ROOT / "training/data/build/guardian"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--low", type=float, default=0.1)
    ap.add_argument("--high", type=float, default=0.9)
    ap.add_argument("--classifier-bin", default=str(ROOT / "target/release/slm-guard"))
    ap.add_argument("--out", default=str(DATA / "hard.jsonl"))
    a = ap.parse_args()
    held_out = {key(json.loads(line)["text"]) for split in ("dev", "test", "heldback")
                for line in open(DATA / f"{split}.jsonl", encoding="utf-8")}
    rows = [r for r in map(json.loads, open(UNIFIED, encoding="utf-8"))
            if r["split"] == "dev" and key(r["text"]) not in held_out]
    scores = classifier_scores(rows, a.classifier_bin)
    hard = [{"id": r["id"], "task": "classify", "lang": r["lang"], "text": r["text"], "unsafe": r["unsafe"],
             "categories": r["categories"], "response": "", "source": r["source"], "kind": r["kind"],
             "classifier_score": round(float(s), 4)}
            for r, s in zip(rows, scores) if a.low < s < a.high]
    with open(a.out, "w", encoding="utf-8") as f:
        for r in hard:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    y = np.array([r["unsafe"] for r in hard])
    print(f"{len(hard)} of {len(rows)} unified dev rows inside ({a.low}, {a.high}) -> {a.out}; "
          f"unsafe share {y.mean():.2f}; by language {dict(Counter(r['lang'] for r in hard))}")


if __name__ == "__main__":
    main()
