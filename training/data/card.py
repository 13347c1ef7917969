"""Write the measured tables of training/DATA_CARD.md from build/stats.json (called by build.py)."""
import json
from collections import defaultdict
from pathlib import Path

from data import sources as S

SPLITS = ["train", "dev", "test", "ood_dev", "ood_test"]


def tables(stats):
    out = ["<!-- measured:begin -->", "",
           f"Built with `--permissive-only`: **{stats['permissive_only']}**. Rows after cleaning: **{stats['rows']:,}**.", "",
           "### Rows per source and split", "",
           "| source | licence | commercial use | benign | unsafe | " + " | ".join(SPLITS) + " | exact dups dropped | near dups dropped | capped | skipped on purpose |",
           "|---" * (9 + len(SPLITS)) + "|"]
    per = defaultdict(lambda: defaultdict(int))
    for k, v in stats["source_split"].items():
        src, split = k.split("|")
        per[src][split] += v
    lab = defaultdict(lambda: [0, 0])
    for k, v in stats["source_unsafe"].items():
        src, u = k.split("|")
        lab[src][int(u)] += v
    skipped = defaultdict(list)
    for k, v in stats["skipped_on_purpose"].items():
        src, why = k.split(" (", 1)
        skipped[src].append(f"{v} {why.rstrip(')')}")
    for src in sorted(per, key=lambda s: -sum(per[s].values())):
        s = S.SOURCES[src]
        out.append(f"| `{src}` | {s.licence} | {'yes' if s.permissive else 'no'} | {lab[src][0]:,} | {lab[src][1]:,} | "
                   + " | ".join(f"{per[src][sp]:,}" for sp in SPLITS)
                   + f" | {stats['exact_dup'].get(src, 0):,} | {stats['near_dup'].get(src, 0):,} | "
                   f"{stats['capped'].get(src, 0):,} | {'; '.join(skipped[src]) or '–'} |")
    out += ["", "### Rows per language, label and split", "", "| lang | label | " + " | ".join(SPLITS) + " |",
            "|---|---|" + "---|" * len(SPLITS)]
    lus = stats["lang_unsafe_split"]
    for lang in ("ko", "en"):
        for u, name in (("0", "benign"), ("1", "unsafe")):
            out.append(f"| {lang} | {name} | " + " | ".join(f"{lus.get(f'{lang}|{u}|{sp}', 0):,}" for sp in SPLITS) + " |")
    out += ["", "### Rows per category (multi-label; rows whose source gives no reliable category are not counted)", "",
            "| category | lang | " + " | ".join(SPLITS) + " |", "|---|---|" + "---|" * len(SPLITS)]
    cls = stats["cat_lang_split"]
    cats = sorted({k.split("|")[0] for k in cls})
    for c in cats:
        for lang in ("ko", "en"):
            out.append(f"| {c} | {lang} | " + " | ".join(f"{cls.get(f'{c}|{lang}|{sp}', 0):,}" for sp in SPLITS) + " |")
    out += ["", "<!-- measured:end -->"]
    return "\n".join(out)


def write(card_path, stats):
    p = Path(card_path)
    text = p.read_text() if p.exists() else "<!-- measured:begin -->\n<!-- measured:end -->\n"
    a, b = text.index("<!-- measured:begin -->"), text.index("<!-- measured:end -->") + len("<!-- measured:end -->")
    p.write_text(text[:a] + tables(stats) + text[b:])
