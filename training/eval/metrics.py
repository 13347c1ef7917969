"""Binary classification metrics used for model selection, thresholds and the model card."""
import numpy as np


def auprc(y, p):
    """Average precision (area under the precision-recall curve, step-wise, as sklearn computes it)."""
    y, p = np.asarray(y), np.asarray(p)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    y = y[order]
    tp = np.cumsum(y)
    precision = tp / np.arange(1, len(y) + 1)
    return float((precision * y).sum() / y.sum())


def at_threshold(y, p, t):
    y, pred = np.asarray(y).astype(bool), np.asarray(p) >= t
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else float("nan")
    return dict(n=len(y), positives=int(y.sum()), f1=f1, precision=precision, recall=recall, fpr=fpr,
                auprc=auprc(y, p))


def best_threshold(y, p, grid=np.linspace(0.05, 0.95, 91)):
    """Threshold that maximises F1 (ties -> the higher threshold, fewer false positives)."""
    best = max(grid, key=lambda t: (round(at_threshold(y, p, t)["f1"], 6), t))
    return float(best)


def paired_bootstrap(y, a, b, resamples=2000, seed=0):
    """F1 and accuracy of decisions `a` minus those of decisions `b` on the same rows, each with a 95 % percentile
    interval over `resamples` resamples of the rows (paired: both decisions see the same resample). On the few
    hundred hard rows of a split, this says whether a difference is larger than the sampling noise. Accuracy is
    reported beside F1 because inside the band the classifier's threshold can sit below the band's floor: it then
    flags every hard row, and F1 rewards that (recall 1) however many safe messages it blocks."""
    y, a, b = (np.asarray(v).astype(bool) for v in (y, a, b))
    idx = np.random.default_rng(seed).integers(0, len(y), (resamples, len(y)))
    yy, aa, bb = y[idx], a[idx], b[idx]

    def f1(yy, d):
        tp, fp, fn = (yy & d).sum(-1), (~yy & d).sum(-1), (yy & ~d).sum(-1)
        return 2 * tp / np.maximum(2 * tp + fp + fn, 1)

    def acc(yy, d):
        return (yy == d).mean(-1)

    out = {"n": int(len(y))}
    for name, metric in (("f1", f1), ("accuracy", acc)):
        diffs = metric(yy, aa) - metric(yy, bb)
        out[f"{name}_diff"] = float(metric(y, a) - metric(y, b))
        out[f"{name}_ci95"] = [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]
    return out
