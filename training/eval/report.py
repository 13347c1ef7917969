"""Evaluate the shipped classifier and the TF-IDF baseline on every evaluation split and write
models/classifier/eval.json and the measured sections of models/classifier/MODEL_CARD.md.

    python -m training.eval.report

Protocol: the shipped (quantized, pruned-vocabulary) weights score dev, test (in-distribution random splits) and
ood_dev, ood_test (whole sources held out of training: K-MHaS, SimpleSafetyTests, do-not-answer, alpaca_eval,
synthetic batch F). Thresholds were chosen on dev + ood_dev; test and ood_test are reported only.
"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classifier.data import load_split  # noqa: E402
from classifier.model import CATEGORIES  # noqa: E402
from eval.metrics import at_threshold  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPLITS = ["dev", "test", "ood_dev", "ood_test"]


def probs_by_id(ids_path, probs_path):
    ids = json.loads(Path(ids_path).read_text())
    return dict(zip(ids, np.load(probs_path)))


def table(rows, score, threshold):
    out = {}
    for split in SPLITS:
        for lang in ("ko", "en", "all"):
            sel = [r for r in rows if r["split"] == split and (lang == "all" or r["lang"] == lang)]
            if not sel:
                continue
            y = np.array([r["unsafe"] for r in sel])
            out[f"{split}/{lang}"] = at_threshold(y, np.array([score(r) for r in sel]), threshold)
    return out


def fmt(x, pct=True):
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{100 * x:.1f}" if pct else str(x)


def main(data=REPO / "training/data/build/unified.jsonl", run=REPO / "training/runs/classifier",
         model_dir=REPO / "models/classifier", baseline=REPO / "training/runs/baseline"):
    rows = load_split(data, SPLITS)
    shipped = probs_by_id(run / "shipped_ids.json", run / "shipped_probs.npy")
    base = probs_by_id(baseline / "ids.json", baseline / "probs.npy")
    export = json.loads((run / "export.json").read_text())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else []
    t = manifest["thresholds"]

    # baseline threshold chosen exactly like the model's: max mean F1 over {dev, ood_dev} x {ko, en}
    grid = np.linspace(0.05, 0.95, 91)
    sets = []
    for split in ("dev", "ood_dev"):
        for lang in ("ko", "en"):
            sel = [r for r in rows if r["split"] == split and r["lang"] == lang]
            sets.append((np.array([r["unsafe"] for r in sel]), np.array([base[r["id"]] for r in sel])))
    base_t = float(max(grid, key=lambda x: (round(np.mean([at_threshold(y, p, x)["f1"] for y, p in sets]), 6), x)))

    result = {
        "thresholds": t, "baseline_threshold": base_t,
        "model": table(rows, lambda r: shipped[r["id"]][0], t["unsafe"]),
        "baseline": table(rows, lambda r: base[r["id"]], base_t),
    }
    # per category, in-distribution test rows whose categories are known
    cats = {}
    for split in ("test", "ood_test"):
        sel = [r for r in rows if r["split"] == split and (r["unsafe"] == 0 or r["cat_known"])]
        for j, c in enumerate(CATEGORIES):
            y = np.array([c in r["categories"] for r in sel])
            if y.sum() >= 5:
                cats[f"{split}/{c}"] = at_threshold(y, np.array([shipped[r["id"]][1 + j] for r in sel]), t[c])
    result["categories"] = cats
    # benign look-alikes (written to trip keyword filters) and per-source OOD results
    look = {}
    for split in SPLITS:
        for lang in ("ko", "en", "all"):
            sel = [r for r in rows if r["split"] == split and r["kind"] == "benign_lookalike"
                   and (lang == "all" or r["lang"] == lang)]
            if sel:
                fp = sum(shipped[r["id"]][0] >= t["unsafe"] for r in sel)
                fpb = sum(base[r["id"]] >= base_t for r in sel)
                look[f"{split}/{lang}"] = {"n": len(sel), "fpr": fp / len(sel), "baseline_fpr": fpb / len(sel)}
    result["lookalikes"] = look
    per_source = defaultdict(dict)
    for split in ("ood_test",):
        by = defaultdict(list)
        for r in rows:
            if r["split"] == split:
                by[r["source"] + ("/" + r["group"] if r["group"] else "")].append(r)
        for src, sel in by.items():
            y = np.array([r["unsafe"] for r in sel])
            per_source[src] = {
                "model": at_threshold(y, np.array([shipped[r["id"]][0] for r in sel]), t["unsafe"]),
                "baseline": at_threshold(y, np.array([base[r["id"]] for r in sel]), base_t)}
    result["ood_sources"] = per_source
    result["export"] = export
    result["training_history"] = history
    (model_dir / "eval.json").write_text(json.dumps(result, indent=1))
    write_card_sections(model_dir / "MODEL_CARD.md", result, manifest)
    m, b = result["model"], result["baseline"]
    for k in ("test/ko", "test/en", "ood_test/ko", "ood_test/en"):
        if k in m:
            print(f"{k:12s} model F1 {fmt(m[k]['f1'])} AUPRC {fmt(m[k]['auprc'])} | baseline F1 {fmt(b[k]['f1'])} "
                  f"AUPRC {fmt(b[k]['auprc'])}")


def write_card_sections(path, r, manifest):
    """Replace the text between `<!-- measured:begin -->` and `<!-- measured:end -->` with the tables."""
    lines = ["<!-- measured:begin -->", "",
             "### Overall (`unsafe` at the shipped threshold "
             f"{r['thresholds']['unsafe']:.2f}; baseline at {r['baseline_threshold']:.2f})", "",
             "| split / lang | n | unsafe | F1 | AUPRC | precision | recall | FPR on benign | baseline F1 | baseline AUPRC | baseline FPR |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in r["model"].items():
        b = r["baseline"][k]
        lines.append(f"| {k} | {v['n']} | {v['positives']} | {fmt(v['f1'])} | {fmt(v['auprc'])} | {fmt(v['precision'])} | "
                     f"{fmt(v['recall'])} | {fmt(v['fpr'])} | {fmt(b['f1'])} | {fmt(b['auprc'])} | {fmt(b['fpr'])} |")
    lines += ["", "### Benign look-alikes (synthetic messages written to trip keyword filters): false-positive rate", "",
              "| split / lang | n | model FPR | baseline FPR |", "|---|---|---|---|"]
    for k, v in r["lookalikes"].items():
        lines.append(f"| {k} | {v['n']} | {fmt(v['fpr'])} | {fmt(v['baseline_fpr'])} |")
    lines += ["", "### Held-out sources (ood_test), per source", "",
              "| source | n | unsafe | model F1 | model AUPRC | model FPR | baseline F1 | baseline AUPRC | baseline FPR |",
              "|---|---|---|---|---|---|---|---|---|"]
    for k, v in sorted(r["ood_sources"].items()):
        m, b = v["model"], v["baseline"]
        lines.append(f"| {k} | {m['n']} | {m['positives']} | {fmt(m['f1'])} | {fmt(m['auprc'])} | {fmt(m['fpr'])} | "
                     f"{fmt(b['f1'])} | {fmt(b['auprc'])} | {fmt(b['fpr'])} |")
    lines += ["", "### Categories (rows whose source gives reliable categories; threshold per category)", "",
              "| split / category | n | positives | threshold | F1 | AUPRC | precision | recall |", "|---|---|---|---|---|---|---|---|"]
    for k, v in r["categories"].items():
        c = k.split("/")[1]
        lines.append(f"| {k} | {v['n']} | {v['positives']} | {r['thresholds'][c]:.2f} | {fmt(v['f1'])} | {fmt(v['auprc'])} | "
                     f"{fmt(v['precision'])} | {fmt(v['recall'])} |")
    e = r["export"]
    lines += ["", "### Vocabulary pruning and quantization (dev split, `unsafe` at the shipped threshold)", "",
              f"Pruning kept {e['pruning']['pieces_after']:,} of {e['pruning']['pieces_before']:,} pieces; "
              f"{100 * e['pruning']['dev']['unchanged']:.2f} % of dev + ood_dev texts tokenize exactly as before "
              f"({e['pruning']['dev']['tokens_after'] - e['pruning']['dev']['tokens_before']:+d} tokens over "
              f"{e['pruning']['dev']['tokens_before']:,}; <unk> {e['pruning']['dev']['unk_before']} → {e['pruning']['dev']['unk_after']}).", "",
              "| variant | dev F1 | dev AUPRC | ood_dev F1 | ood_dev AUPRC | GGUF bytes |", "|---|---|---|---|---|---|"]
    for k, v in e["variants"].items():
        lines.append(f"| {k}{' **(shipped)**' if k == e['chosen'] else ''} | {fmt(v['dev']['f1'])} | {fmt(v['dev']['auprc'])} | "
                     f"{fmt(v['ood_dev']['f1'])} | {fmt(v['ood_dev']['auprc'])} | {v.get('bytes', '–')} |")
    if r["training_history"]:
        lines += ["", "### Training curve (AUPRC of `unsafe`; checkpoint chosen on ood_dev)", "",
                  "| step | dev ko | dev en | ood_dev ko | ood_dev en |", "|---|---|---|---|---|"]
        for h in r["training_history"]:
            lines.append(f"| {h['step']} | {fmt(h['dev']['ko'])} | {fmt(h['dev']['en'])} | {fmt(h['ood_dev']['ko'])} | "
                         f"{fmt(h['ood_dev']['en'])} |")
    lines += ["", "<!-- measured:end -->"]
    text = path.read_text() if path.exists() else "<!-- measured:begin -->\n<!-- measured:end -->\n"
    a, b = text.index("<!-- measured:begin -->"), text.index("<!-- measured:end -->") + len("<!-- measured:end -->")
    path.write_text(text[:a] + "\n".join(lines) + text[b:])


if __name__ == "__main__":
    main()
