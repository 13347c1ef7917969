"""Replies as classifier rows: what the reply gate asks the classifier about.

Why: the reply gate (src/reply_gate.rs) asks the classifier whether a guardian reply is unsafe, but the classifier
was trained on messages only, and a refusal names the request's topic ("I can't help you make a bomb"): read alone,
it flags about half of the harmless replies our readers rated and barely separates the harmful ones
(training/guardian/reply_review/v1.1_vs_w2/judges.json: ROC AUC 0.58, Korean 0.42). These rows teach it replies:

- harmless (unsafe 0): the safe replies the guardian trains on (respond and force targets of
  training/data/build/guardian/{train,dev,test}.jsonl: synthetic ko/en, VAIV's corrective replies, SQuARe's
  acceptable ones, AdversariaLLM's refusals, hh-rlhf), each once, in its row's split. Replies to requests from a
  source the classifier's ood splits hold out (do-not-answer, synthetic batch F, ...) are left out, so those splits
  stay unseen.

There are no harmful replies here: the one public set with harm labels on replies (do-not-answer's six models) is an
ood source of the classifier. Measured (2026-12-04, one epoch on messages + these rows, `train.py --data
training/data/build/unified_replies.jsonl --epochs 1`, exported like the shipped one; training/guardian/RUN_NOTES.md):
messages unchanged (test F1 ko 82.5 -> 82.9, en 95.2 -> 95.2; `training/eval/compare.py`), false positives on the
readers' harmless replies 49 % -> 4 %, but it flags none of the 25 harmful ones (ROC AUC 0.41): it learned "a reply
is safe". Not shipped. A reply check needs harmful replies to learn from, Korean ones above all: see
`reply_head.py`, which learns from the guardian's own rated replies (training/guardian/reply_labels).

    python training/classifier/replies.py            # -> training/data/build/replies.jsonl + unified_replies.jsonl
    python training/classifier/train.py --data training/data/build/unified_replies.jsonl --run RUN ...
"""
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "training/data/build"
sys.path.insert(0, str(REPO / "training"))
from data import sources as S  # noqa: E402


def row(rid, text, lang, unsafe, source, split):
    return {"id": rid, "text": text, "lang": lang, "unsafe": unsafe, "categories": [], "cat_known": not unsafe,
            "kind": "reply", "source": source, "group": "", "licence": "", "permissive": False, "split": split,
            "response": ""}


def held_out(source):
    """A source (or synthetic batch) that the classifier's ood_dev / ood_test splits hold out of training."""
    name, _, batch = source.partition(":")
    return batch.startswith("batch_ood") or (name in S.SOURCES and S.SOURCES[name].ood)


def guardian_replies():
    seen, out = set(), []
    for split in ("train", "dev", "test"):
        for line in open(BUILD / f"guardian/{split}.jsonl", encoding="utf-8"):
            r = json.loads(line)
            text = r.get("response", "").strip()
            if r["task"] not in ("respond", "force") or not text or text in seen or held_out(r["source"]):
                continue
            seen.add(text)
            out.append(row(f"reply-{r['id']}", text, r["lang"], 0, f"reply:{r['source']}", split))
    return out


def main():
    rows = guardian_replies()
    with open(BUILD / "replies.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(BUILD / "unified_replies.jsonl", "w", encoding="utf-8") as f:
        f.write((BUILD / "unified.jsonl").read_text(encoding="utf-8"))
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    counts = {}
    for r in rows:
        k = f"{r['lang']}|{r['unsafe']}|{r['split']}"
        counts[k] = counts.get(k, 0) + 1
    print(f"{len(rows)} reply rows -> {BUILD / 'replies.jsonl'}; with the messages: {BUILD / 'unified_replies.jsonl'}")
    print(json.dumps(dict(sorted(counts.items()))))


if __name__ == "__main__":
    main()
