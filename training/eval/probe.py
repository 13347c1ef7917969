"""How the shipped guard treats one probe file of messages, through the native runtime (what ships), with the
default policy (or `--policy`): the classifier alone, the guardian alone, and the cascade (`classify --cascade`, as
JS `classify` runs it when a guardian is loaded). Reports per language the share of unsafe rows flagged (recall)
and of benign rows flagged (false-positive rate), each with a Wilson 95 % interval, recall per category, and every
miss.

    python training/eval/probe.py [FILE.jsonl] [--max-words N] [--policy POLICY.json] [--setups ...] [--out F.json]
    python training/eval/probe.py --split ood_test [--group batch_ood_i]   # one split of the data build's rows

The default file is the held-out short-Korean-message probe `training/data/synthetic/batch_ood_i.jsonl` (an
out-of-distribution batch: build.py never trains on it). Rows use the synthetic schema (text, lang, unsafe,
categories). A model trained on the build (`training/data/build/unified.jsonl`) chose its checkpoint and threshold
on `ood_dev`, which holds half of every held-out batch: compare such a model on `--split ood_test` only. Standard
library only, plus the release CLI (`cargo build --release --bin slm-guard`).
"""
import argparse
import json
import math
import subprocess
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "target/release/slm-guard"
SETUPS = {
    "classifier": ["--model", str(REPO / "models/classifier")],
    "guardian": ["--model", str(REPO / "models/guardian")],
    "cascade": ["--model", str(REPO / "models/classifier"), "--cascade", str(REPO / "models/guardian")],
}


def wilson(k, n, z=1.96):
    """95 % interval of a proportion k / n (Wilson score), in percent."""
    if n == 0:
        return (float("nan"),) * 2
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def verdicts(args, rows, policy=None):
    lines = "".join(json.dumps({"id": i, "text": r["text"]}, ensure_ascii=False) + "\n" for i, r in enumerate(rows))
    res = subprocess.run([str(CLI), "classify", "--jsonl", *args, *(["--policy", policy] if policy else [])],
                         input=lines, capture_output=True, text=True,
                         check=True)
    out = {}
    for line in res.stdout.splitlines():
        v = json.loads(line)
        if "verdict" in v:
            out[v["id"]] = v["verdict"]
    missing = [i for i in range(len(rows)) if i not in out]
    if missing:
        raise SystemExit(f"{len(missing)} rows got no verdict (first: {rows[missing[0]]['text']!r})")
    return [out[i] for i in range(len(rows))]


def summarise(rows, vs):
    report = {}
    for lang in sorted({r["lang"] for r in rows}):
        idx = [i for i, r in enumerate(rows) if r["lang"] == lang]
        unsafe = [i for i in idx if rows[i]["unsafe"] == 1]
        benign = [i for i in idx if rows[i]["unsafe"] == 0]
        caught = sum(vs[i]["flagged"] for i in unsafe)
        false_pos = sum(vs[i]["flagged"] for i in benign)
        per_cat = defaultdict(lambda: [0, 0])
        for i in unsafe:
            for c in rows[i]["categories"]:
                per_cat[c][0] += vs[i]["flagged"]
                per_cat[c][1] += 1
        report[lang] = {
            "unsafe": len(unsafe), "benign": len(benign),
            "recall": 100 * caught / max(len(unsafe), 1), "recall_ci": wilson(caught, len(unsafe)),
            "fpr": 100 * false_pos / max(len(benign), 1), "fpr_ci": wilson(false_pos, len(benign)),
            "recall_by_category": {c: f"{k}/{n}" for c, (k, n) in sorted(per_cat.items())},
            "missed": [rows[i]["text"] for i in unsafe if not vs[i]["flagged"]],
            "false_positives": [rows[i]["text"] for i in benign if vs[i]["flagged"]],
        }
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", default=str(REPO / "training/data/synthetic/batch_ood_i.jsonl"))
    ap.add_argument("--max-words", type=int, default=0, help="only rows of at most this many words (0: all)")
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    ap.add_argument("--policy", help="a policy file for every setup (default: the manifests' defaults)")
    ap.add_argument("--split", help="read the data build's rows of this split (with --group) instead of FILE")
    ap.add_argument("--group", default="batch_ood_i", help="the build's `group` (a synthetic batch's file stem)")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.split:
        a.file = str(REPO / "training/data/build/unified.jsonl")
    rows = [json.loads(line) for line in Path(a.file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if a.split:
        rows = [r for r in rows if r["split"] == a.split and r["group"] == a.group]
        if not rows:
            raise SystemExit(f"no rows of group {a.group!r} in split {a.split!r} (run training/data/build.py)")
    if a.max_words:
        rows = [r for r in rows if len(r["text"].split()) <= a.max_words]
    models = {name: json.loads((REPO / SETUPS[name][1] / "manifest.json").read_text())["version"] for name in a.setups}
    path = Path(a.file).resolve()
    result = {"file": str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path), "rows": len(rows),
              "policy": a.policy or "default", "versions": models, "setups": {}}
    if a.split:
        result["file"] += f" ({a.group}, {a.split})"
    print(f"{result['file']}: {len(rows)} rows; policy {result['policy']}; flagged = the verdict's `flagged`")
    print("| setup | lang | unsafe flagged (recall) | benign flagged (FPR) |")
    print("|---|---|---|---|")
    for name in a.setups:
        rep = summarise(rows, verdicts(SETUPS[name], rows, a.policy))
        result["setups"][name] = rep
        for lang, r in rep.items():
            print(f"| {name} | {lang} | {r['recall']:.1f} % [{r['recall_ci'][0]:.1f}, {r['recall_ci'][1]:.1f}] "
                  f"of {r['unsafe']} | {r['fpr']:.1f} % [{r['fpr_ci'][0]:.1f}, {r['fpr_ci'][1]:.1f}] of {r['benign']} |")
    for name in a.setups:
        for lang, r in result["setups"][name].items():
            print(f"{name} {lang} recall by category: {r['recall_by_category']}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
