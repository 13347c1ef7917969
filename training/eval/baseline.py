"""TF-IDF character n-gram + logistic regression baseline, trained on the same train split as the classifier.

    python -m training.eval.baseline      -> training/runs/baseline/probs.npy (+ ids.json)
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classifier.data import load_split  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EVAL_SPLITS = ["dev", "ood_dev", "test", "ood_test"]


def main(data=REPO / "training/data/build/unified.jsonl", out=REPO / "training/runs/baseline"):
    t0 = time.time()
    train = load_split(data, ["train"])
    rows = load_split(data, EVAL_SPLITS)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, max_features=300_000, sublinear_tf=True)
    x = vec.fit_transform([r["text"] for r in train])
    clf = LogisticRegression(C=4.0, max_iter=2000)
    clf.fit(x, [r["unsafe"] for r in train])
    probs = clf.predict_proba(vec.transform([r["text"] for r in rows]))[:, 1]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "probs.npy", probs.astype(np.float32))
    (out / "ids.json").write_text(json.dumps([r["id"] for r in rows]))
    print(f"baseline trained on {len(train)} rows, scored {len(rows)} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
