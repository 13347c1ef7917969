"""Check synthetic data files: schema, allowed values, duplicates, counts.

Usage: python training/data/synthetic/validate.py [FILE ...]   (default: every *.jsonl next to this script)
"""
import json
import pathlib
import sys
import unicodedata
from collections import Counter

CATEGORIES = {"hate", "harassment", "violence", "sexual", "sexual_minors", "self_harm", "crime", "privacy", "prompt_attack"}
KINDS = {"harmful_request", "harmful_statement", "prompt_attack", "benign_lookalike", "benign_sensitive"}
REGISTERS = {"casual", "polite", "formal", "slang", "typo", "jamo", "spacing", "codemix", "roleplay", "multiturn"}
HANGUL = lambda s: any("\uac00" <= c <= "\ud7a3" or "\u3131" <= c <= "\u318e" for c in s)


def check(path):
    errors, rows = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            errors.append(f"{path}:{n}: not JSON: {e}")
            continue
        where = f"{path}:{n}"
        for k in ("id", "text", "lang", "unsafe", "categories", "kind", "register"):
            if k not in r:
                errors.append(f"{where}: missing field {k!r}")
        if errors and errors[-1].startswith(where):
            continue
        if r["lang"] not in ("ko", "en"):
            errors.append(f"{where}: lang must be ko or en")
        if r["unsafe"] not in (0, 1):
            errors.append(f"{where}: unsafe must be 0 or 1")
        bad = set(r["categories"]) - CATEGORIES
        if bad:
            errors.append(f"{where}: unknown categories {bad}")
        if r["unsafe"] == 1 and not r["categories"]:
            errors.append(f"{where}: unsafe row needs at least one category")
        if r["unsafe"] == 0 and r["categories"]:
            errors.append(f"{where}: safe row must have no categories")
        if r["kind"] not in KINDS:
            errors.append(f"{where}: kind {r['kind']!r} not in {sorted(KINDS)}")
        if r["register"] not in REGISTERS:
            errors.append(f"{where}: register {r['register']!r} not in {sorted(REGISTERS)}")
        if r["unsafe"] == 1 and not (r.get("response") or "").strip():
            errors.append(f"{where}: unsafe row needs a safe 'response'")
        if r["lang"] == "ko" and not HANGUL(r["text"]):
            errors.append(f"{where}: ko row has no Hangul")
        if r["unsafe"] == 1 and r["lang"] == "ko" and not HANGUL(r["response"]):
            errors.append(f"{where}: ko response has no Hangul")
        if r["unsafe"] == 1 and r["lang"] == "en" and HANGUL(r["response"]):
            errors.append(f"{where}: en response contains Hangul")
        if not (3 <= len(r["text"]) <= 2000):
            errors.append(f"{where}: text length {len(r['text'])} out of range")
        rows.append(r)
    return rows, errors


def main(argv):
    here = pathlib.Path(__file__).parent
    files = [pathlib.Path(a) for a in argv] or sorted(here.glob("*.jsonl"))
    all_rows, all_errors = [], []
    for f in files:
        rows, errors = check(f)
        all_rows += [(f.name, r) for r in rows]
        all_errors += errors
    seen = {}
    for name, r in all_rows:
        key = " ".join(unicodedata.normalize("NFKC", r["text"]).lower().split())
        if key in seen:
            all_errors.append(f"{name}: duplicate text (also in {seen[key]}): {r['text'][:60]!r}")
        seen[key] = name
    ids = Counter(r["id"] for _, r in all_rows)
    all_errors += [f"duplicate id {i}" for i, c in ids.items() if c > 1]
    c = Counter((r["lang"], r["kind"]) for _, r in all_rows)
    cats = Counter((r["lang"], cat) for _, r in all_rows for cat in r["categories"])
    print(f"{len(all_rows)} rows in {len(files)} files")
    for k, v in sorted(c.items()):
        print(f"  {k[0]} {k[1]:18s} {v}")
    for k, v in sorted(cats.items()):
        print(f"  {k[0]} cat {k[1]:14s} {v}")
    for e in all_errors[:50]:
        print("ERROR", e)
    if all_errors:
        print(f"{len(all_errors)} errors")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
