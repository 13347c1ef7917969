"""Can the cascade beat the classifier by combining, inside the band, the two models' scores instead of handing the
decision to the guardian alone? Reads hard_eval.py's output (every hard row's classifier and guardian score on the
classifier's whole dev and test splits), fits each rule on the dev split's hard rows only, and reports it on test.

Rules (all decide only inside the band; outside it the classifier's verdict stands):
- guardian: the guardian's score at its manifest threshold (the cascade without fusion);
- english: the guardian decides English messages, the classifier Korean ones (the guardian is better in English);
- stack: logistic regression on the two scores' logits, threshold chosen on dev;
- stack_lang: the same with a per-language bias and weights.

The fitted rule with the best dev cascade F1 is written into the model's manifest as `thresholds.cascade_fusion`
(`--write`; per language: bias, classifier and guardian weights on the scores' logits, the decision threshold folded
into the bias so the fused score is read at the manifest's `unsafe` threshold). The runtime's cascade then runs on
the whole test split (`slm-guard classify --jsonl --cascade`), and its numbers are the ones reported: they check
that the Rust cascade computes what was fitted here.

    python training/guardian/fusion.py --hard-eval training/runs/hard_eval/v11.json [--model models/guardian] [--write]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.eval.metrics import at_threshold  # noqa: E402
from training.guardian.eval import cli_verdicts, paired_bootstrap  # noqa: E402
from training.guardian.hard_eval import split_rows  # noqa: E402


def logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def features(d, per_lang):
    """A split's hard rows as regression inputs: both logits, and with `per_lang` an English indicator and its
    products with them (so English gets its own bias and weights)."""
    x = [logit(d["c"]), logit(d["g"])]
    if per_lang:
        x += [d["en"], d["en"] * logit(d["c"]), d["en"] * logit(d["g"])]
    return np.stack(x, 1)


class Stack:
    """Logistic regression on the hard rows' scores, decided at the threshold that maximises the dev cascade's F1
    (the metric the classifier's own threshold was chosen by)."""

    def __init__(self, dev, per_lang, t_cls):
        self.per_lang = per_lang
        self.lr = LogisticRegression(C=1.0, max_iter=1000).fit(features(dev, per_lang), dev["yh"])
        z = self.score(dev)
        grid = np.quantile(z, np.linspace(0.02, 0.98, 193))
        self.threshold = float(max(grid, key=lambda t: (
            round(cascade_f1(dev["y"], dev["c_all"], dev["hard"], z >= t, t_cls)[0], 6), t)))

    def score(self, d):
        return self.lr.decision_function(features(d, self.per_lang))

    def __call__(self, d):
        return self.score(d) >= self.threshold

    def fit(self):
        return dict(coef=self.lr.coef_[0].tolist(), intercept=float(self.lr.intercept_[0]),
                    threshold=self.threshold, per_lang=self.per_lang)


def cascade_f1(y, c_all, hard, decision_hard, t_cls):
    d = (c_all >= t_cls).copy()
    d[hard] = decision_hard
    return at_threshold(y, d.astype(float), 0.5)["f1"], d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hard-eval", required=True)
    ap.add_argument("--model", default=str(ROOT / "models/guardian"))
    ap.add_argument("--out", default=str(ROOT / "training/runs/hard_eval/fusion.json"))
    ap.add_argument("--bin", default=str(ROOT / "target/release/slm-guard"))
    ap.add_argument("--write", action="store_true", help="write the chosen rule into the model's manifest")
    a = ap.parse_args()
    he = json.loads(Path(a.hard_eval).read_text())
    t_cls = he["classifier_threshold"]
    # the entry for --model (hard_eval.py keys its results by the directory it was given)
    key, m = next(((k, v) for k, v in he["models"].items() if Path(k).resolve() == Path(a.model).resolve()),
                  next(iter(he["models"].items())))
    t_g = m["guardian_threshold"]
    rows = split_rows()
    data = {}
    for split in ("dev", "test"):
        by_id = {r["id"]: r for r in rows[split]}
        ids = [r["id"] for r in rows[split]]
        y = np.array([r["unsafe"] for r in rows[split]], dtype=bool)
        hard_ids = {h["id"]: h for h in m[split]["hard_rows"]}
        hard = np.array([i in hard_ids for i in ids])
        # hard_eval.py keeps only the hard rows' scores; the classifier's whole-split scores are in its cache
        cache = json.loads((ROOT / "training/runs/hard_eval" / f"classifier_{split}.json").read_text())
        assert cache["ids"] == ids, "classifier cache does not match the unified file"
        c_all = np.array(cache["scores"])
        h = np.flatnonzero(hard)
        data[split] = dict(
            y=y, c_all=c_all, hard=hard, yh=y[h],
            c=np.array([hard_ids[ids[i]]["classifier"] for i in h]),
            g=np.array([hard_ids[ids[i]]["guardian"] for i in h]),
            en=np.array([by_id[ids[i]]["lang"] == "en" for i in h], dtype=float))
    rules = {
        "classifier": lambda d: d["c"] >= t_cls,
        "guardian": lambda d: d["g"] >= t_g,
        "english": lambda d: np.where(d["en"] > 0, d["g"] >= t_g, d["c"] >= t_cls),
    }
    scores = {"classifier": lambda d: d["c"], "guardian": lambda d: d["g"]}
    fitted = {}
    for name, per_lang in (("stack", False), ("stack_lang", True)):
        rules[name] = stack = Stack(data["dev"], per_lang, t_cls)
        scores[name], fitted[name] = stack.score, stack.fit()
    out = {"classifier_threshold": t_cls, "guardian_threshold": t_g, "model": key, "rules": {}}
    for name, rule in rules.items():
        res = {}
        for split, d in data.items():
            dec = rule(d)
            f1, whole = cascade_f1(d["y"], d["c_all"], d["hard"], dec, t_cls)
            base = d["c_all"] >= t_cls
            score = scores[name](d) if name in scores else None
            res[split] = {
                "hard_f1": at_threshold(d["yh"], dec.astype(float), 0.5)["f1"],
                "hard_accuracy": float((dec == d["yh"]).mean()),
                "hard_roc_auc": float(roc_auc_score(d["yh"], score)) if score is not None else None,
                "hard_roc_auc_minus_classifier": auc_bootstrap(d["yh"], score, d["c"]) if score is not None else None,
                "hard_minus_classifier": paired_bootstrap(d["yh"], dec, d["c"] >= t_cls),
                "cascade": at_threshold(d["y"], whole.astype(float), 0.5),
                "cascade_minus_classifier": paired_bootstrap(d["y"], whole, base),
            }
            b = res[split]["cascade_minus_classifier"]
            hb = res[split]["hard_minus_classifier"]
            print(f"{name:11s} {split}: hard F1 {100 * res[split]['hard_f1']:.1f} acc "
                  f"{100 * res[split]['hard_accuracy']:.1f} AUC {res[split]['hard_roc_auc'] or float('nan'):.3f} "
                  f"(F1 vs classifier {100 * hb['f1_diff']:+.1f} [{100 * hb['f1_ci95'][0]:+.1f}, {100 * hb['f1_ci95'][1]:+.1f}]"
                  f" acc {100 * hb['accuracy_diff']:+.1f} [{100 * hb['accuracy_ci95'][0]:+.1f}, {100 * hb['accuracy_ci95'][1]:+.1f}])"
                  f" | cascade F1 {100 * res[split]['cascade']['f1']:.2f} diff {100 * b['f1_diff']:+.2f} "
                  f"[{100 * b['f1_ci95'][0]:+.2f}, {100 * b['f1_ci95'][1]:+.2f}] recall "
                  f"{100 * res[split]['cascade']['recall']:.1f} FPR {100 * res[split]['cascade']['fpr']:.1f}")
        out["rules"][name] = {**res, **fitted.get(name, {})}
    best = max(fitted, key=lambda k: out["rules"][k]["dev"]["cascade"]["f1"])
    out["chosen"] = best
    out["cascade_fusion"] = manifest_weights(fitted[best], t_g)
    print(f"chosen on dev: {best} {out['cascade_fusion']}")
    if a.write:
        path = Path(a.model) / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["thresholds"]["cascade_fusion"] = out["cascade_fusion"]
        path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote thresholds.cascade_fusion into {path}")
        out["runtime_test"] = runtime_check(a, rows["test"], data["test"], rules[best](data["test"]), t_cls)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


def auc_bootstrap(y, a, b, resamples=1000, seed=0):
    """ROC AUC of scores `a` minus that of `b` on the same rows, with a paired 95 % percentile interval."""
    idx = np.random.default_rng(seed).integers(0, len(y), (resamples, len(y)))
    diffs = [roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]) for i in idx]
    return {"diff": float(roc_auc_score(y, a) - roc_auc_score(y, b)),
            "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}


def manifest_weights(fit, t_g):
    """Per-language weights on (logit c, logit g) with the dev threshold folded into the bias: z >= threshold
    becomes sigmoid(bias + ...) >= t_g, the guardian's own `unsafe` threshold, which the runtime reads."""
    b, w = fit["intercept"] - fit["threshold"] + float(logit(np.array(t_g))), fit["coef"]
    r = lambda v: round(float(v), 6)  # noqa: E731
    ko = {"bias": r(b), "classifier": r(w[0]), "guardian": r(w[1])}
    if not fit["per_lang"]:
        return {"ko": ko, "en": dict(ko)}
    return {"ko": ko, "en": {"bias": r(b + w[2]), "classifier": r(w[0] + w[3]), "guardian": r(w[1] + w[4])}}


def runtime_check(a, rows, d, predicted_hard, t_cls):
    """The Rust cascade on the whole split: its verdicts against the fitted rule's decisions, and its numbers."""
    verdicts = cli_verdicts(rows, a.bin, ["--cascade", a.model])
    flagged = np.array([v["flagged"] if v else True for v in verdicts])
    fused = np.array([bool(v and v.get("cascade", {}).get("fusion")) for v in verdicts])
    expected = (d["c_all"] >= t_cls).copy()
    expected[d["hard"]] = predicted_hard
    res = {"agreement": float((flagged == expected).mean()), "fused_rows": int(fused.sum()),
           "hard_rows": int(d["hard"].sum()), "cascade": at_threshold(d["y"], flagged.astype(float), 0.5),
           "cascade_minus_classifier": paired_bootstrap(d["y"], flagged, d["c_all"] >= t_cls)}
    b = res["cascade_minus_classifier"]
    print(f"runtime cascade on test: agrees with the fitted rule on {100 * res['agreement']:.2f} % of rows, "
          f"{res['fused_rows']} fused of {res['hard_rows']} hard; F1 {100 * res['cascade']['f1']:.2f} diff "
          f"{100 * b['f1_diff']:+.2f} [{100 * b['f1_ci95'][0]:+.2f}, {100 * b['f1_ci95'][1]:+.2f}], recall "
          f"{100 * res['cascade']['recall']:.1f} FPR {100 * res['cascade']['fpr']:.1f}")
    return res


if __name__ == "__main__":
    main()
