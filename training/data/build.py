"""Build the unified safety dataset: read every source, normalise, deduplicate (exact and near-duplicate, across
sources), cap, split, write.

    python -m training.data.build [--permissive-only] [--shared ../shared/data] [--out training/data/build]

Output (not in git; rebuilt by this command in about a minute):
    <out>/unified.jsonl   one row per line: id, text, lang, unsafe, categories, cat_known, kind, source, licence,
                          permissive, split, response
    <out>/stats.json      counts per source / language / category / split, skipped rows, licences
Splits: train / dev / test (80/10/10, random with a fixed seed, stratified by source and label) for in-distribution
sources; ood_dev / ood_test (50/50) for sources held out whole. Thresholds and checkpoints are chosen on ood_dev;
ood_test is only reported.
"""
import argparse
import hashlib
import json
import random
import re
import sys
import unicodedata
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common.normalize import normalize  # noqa: E402
from data import sources as S  # noqa: E402

SEED = 20261127
MIN_CHARS = 2
MAX_CHARS = 4000  # longer rows (pasted documents) are cut: the runtime windows long text anyway


# Chit-chat corpora label some expressions of suicidal intent ("죽고 싶다") as ordinary chat. Under the taxonomy that
# is `self_harm`, so such rows are dropped from benign chit-chat sources instead of teaching "despair = safe".
CHITCHAT = {"songys__Chatbot_data", "airobotlab__KoChatGPT", "warnikchow__3i4k", "songys__Question_pair",
            "VAIV-2023__RLHF-Korean-Friendly-LLM", "instructkr__LogicKor"}
SELF_HARM_INTENT = re.compile(r"죽고\s*싶|자살\s*하고\s*싶|목숨\s*을?\s*끊|죽어\s*버리고\s*싶|살고\s*싶지\s*않|"
                              r"끝내고\s*싶|kill myself|want to die|end my life|suicid", re.I)


def dedupe_key(text):
    """Aggressive key for exact-duplicate detection: case, spacing, punctuation and repeated characters ignored."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = "".join(c for c in t if c.isalnum())
    return re.sub(r"(.)\1+", r"\1", t)


class MinHashLSH:
    """Near-duplicate groups by MinHash over character 5-grams (64 hashes, 16 bands x 4 rows: pairs with Jaccard
    >= ~0.8 collide with probability > 0.99), confirmed by signature agreement >= 0.8."""

    P = (1 << 61) - 1

    def __init__(self, n_hash=64, bands=16, seed=SEED):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 31, n_hash, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 31, n_hash, dtype=np.uint64)
        self.bands, self.rows = bands, n_hash // bands

    def signature(self, key):
        sh = {key[i:i + 5] for i in range(max(1, len(key) - 4))}
        h = np.array([zlib.crc32(s.encode()) for s in sh], dtype=np.uint64)
        return ((h[:, None] * self.a[None, :] + self.b[None, :]) % np.uint64(4294967311)).min(axis=0)

    def groups(self, keys):
        sigs = [self.signature(k) if len(k) >= 20 else None for k in keys]
        parent = list(range(len(keys)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for band in range(self.bands):
            buckets = defaultdict(list)
            lo = band * self.rows
            for i, s in enumerate(sigs):
                if s is not None:
                    buckets[s[lo:lo + self.rows].tobytes()].append(i)
            for members in buckets.values():
                first = members[0]
                for j in members[1:]:
                    if find(j) != find(first) and (sigs[first] == sigs[j]).mean() >= 0.8:
                        a, b = find(first), find(j)
                        parent[max(a, b)] = min(a, b)  # the earlier (higher-priority) row is the root
        return [find(i) for i in range(len(keys))]


def is_ood(row):
    return S.SOURCES[row.source].ood or row.group.startswith("batch_ood")


def _sample(rows, n, key):
    rows = sorted(rows, key=lambda r: r.text)
    random.Random(key).shuffle(rows)
    return rows[:n]


def cap_source(name, rs, stats):
    """Deterministic per-source caps, applied before deduplication so a dropped row never shadows another source."""
    src = S.SOURCES[name]
    if src.cap and len(rs) > src.cap:
        by_label = defaultdict(list)
        for r in rs:
            by_label[r.unsafe].append(r)
        rs = [r for u, g in sorted(by_label.items()) for r in _sample(g, round(src.cap * len(g) / len(rs)), f"{SEED}-{name}-{u}")]
    if src.benign_cap:
        benign = [r for r in rs if not r.unsafe]
        if len(benign) > src.benign_cap:
            rs = [r for r in rs if r.unsafe] + _sample(benign, src.benign_cap, f"{SEED}-{name}-benign")
    return rs


def build(shared, syn_dir, permissive_only=False):
    stats = {k: Counter() for k in ("raw", "exact_dup", "near_dup", "capped", "too_short", "not_permissive")}
    ordered = []
    for name, gen in S.load_all(shared, syn_dir):
        src, rs = S.SOURCES[name], []
        for r in gen:
            r.source = name
            r.licence = r.licence or src.licence
            stats["raw"][name] += 1
            if permissive_only and not S.is_permissive(r):
                stats["not_permissive"][name] += 1
                continue
            r.text = normalize(r.text)[:MAX_CHARS]
            if len(r.text) < MIN_CHARS:
                stats["too_short"][name] += 1
                continue
            if name in CHITCHAT and not r.unsafe and SELF_HARM_INTENT.search(r.text):
                S.SKIPPED[(name, "self-harm intent in a chit-chat source")] += 1
                continue
            rs.append(r)
        kept = cap_source(name, rs, stats)
        stats["capped"][name] += len(rs) - len(kept)
        ordered += kept
    # exact duplicates (aggressive key), then near duplicates; the earlier source in priority order wins
    seen, rows = set(), []
    for r in ordered:
        k = dedupe_key(r.text) or r.text
        if k in seen:
            stats["exact_dup"][r.source] += 1
            continue
        seen.add(k)
        rows.append(r)
    roots = MinHashLSH().groups([dedupe_key(r.text) for r in rows])
    kept = []
    for i, r in enumerate(rows):
        if roots[i] != i:
            stats["near_dup"][r.source] += 1
        else:
            kept.append(r)
    strata = defaultdict(list)
    for r in kept:
        strata[(r.source, r.group, is_ood(r), r.lang, r.unsafe)].append(r)
    out = []
    for (name, group, ood, lang, unsafe), members in sorted(strata.items()):
        members = _sample(members, len(members), f"{SEED}-{name}-{group}-{lang}-{unsafe}")
        n = len(members)
        for j, r in enumerate(members):
            if ood:
                split = "ood_dev" if j < n // 2 else "ood_test"
            else:
                split = "train" if j < round(n * 0.8) else "dev" if j < round(n * 0.9) else "test"
            rid = r.id or f"{name}-{hashlib.sha256(r.text.encode()).hexdigest()[:12]}"
            out.append(dict(id=rid, text=r.text, lang=r.lang, unsafe=r.unsafe, categories=sorted(set(r.categories)),
                            cat_known=r.cat_known, kind=r.kind, source=name, group=r.group, licence=r.licence,
                            permissive=S.is_permissive(r), split=split, response=r.response))
    stats["skipped_on_purpose"] = Counter({f"{s} ({why})": n for (s, why), n in S.SKIPPED.items()})
    return out, stats


def summarise(rows, stats, permissive_only):
    t = defaultdict(Counter)
    for r in rows:
        t["source_split"][f"{r['source']}|{r['split']}"] += 1
        t["source_unsafe"][f"{r['source']}|{r['unsafe']}"] += 1
        t["lang_split"][f"{r['lang']}|{r['split']}"] += 1
        t["lang_unsafe_split"][f"{r['lang']}|{r['unsafe']}|{r['split']}"] += 1
        for c in r["categories"]:
            t["cat_lang_split"][f"{c}|{r['lang']}|{r['split']}"] += 1
        t["licence"][f"{r['source']}|{r['licence']}|{r['permissive']}"] += 1
    return {"permissive_only": permissive_only, "rows": len(rows), **{k: dict(v) for k, v in t.items()},
            **{k: dict(v) for k, v in stats.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(HERE.parents[2] / "shared" / "data"))
    ap.add_argument("--synthetic", default=str(HERE / "synthetic"))
    ap.add_argument("--out", default=str(HERE / "build"))
    ap.add_argument("--card", default=str(HERE.parent / "DATA_CARD.md"), help="data card whose tables are rewritten")
    ap.add_argument("--permissive-only", action="store_true",
                    help="keep only rows whose licence allows commercial use (drops NC, ND, unlicensed, GPL sources)")
    a = ap.parse_args()
    try:
        rows, stats = build(a.shared, a.synthetic, a.permissive_only)
    except S.DataError as e:
        sys.exit(f"data error: {e}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "unified.jsonl", "w", encoding="utf-8") as f:
        for r in sorted(rows, key=lambda r: r["id"]):
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = summarise(rows, stats, a.permissive_only)
    (out / "stats.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1, sort_keys=True))
    from data import card
    card.write(a.card, summary)
    splits = Counter(r["split"] for r in rows)
    print(f"{len(rows)} rows -> {out / 'unified.jsonl'}  {dict(splits)}")


if __name__ == "__main__":
    main()
