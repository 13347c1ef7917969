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
