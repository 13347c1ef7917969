"""Choose the guardian's Korean + English vocabulary (a subset of Gemma 3's 262,144 pieces) before training.

Kept: the control tokens (<pad> <eos> <bos> <unk> <start_of_turn> <end_of_turn>, our 14 special tokens), the 256
byte-fallback pieces (so any text still encodes), every piece containing Hangul, every single printable ASCII
character, every run of whitespace, every piece of a training response, and every piece the training queries produce at least
`--min-count` times; then the
set is closed under BPE merges (a kept piece keeps the two pieces it is merged from), so texts made of kept pieces
tokenize exactly as before. Training restricts its loss to this set, and export keeps only these embedding rows.

    python training/guardian/vocab.py            # -> training/runs/guardian/vocab.json
    python training/guardian/vocab.py --from-delta models/guardian/delta.gguf   # a continuation keeps its vocabulary
"""
import argparse
import collections
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.guardian import spec  # noqa: E402
from training.guardian.gemma3 import load_tokenizer  # noqa: E402
from training.common.normalize import normalize  # noqa: E402

BASE_TOKENIZER = ROOT / "training/.cache/assets/gemma3-tokenizer.json"
OUT = ROOT / "training/runs/guardian/vocab.json"
CONTROL = [spec.PAD, spec.EOS, spec.BOS, 3, 105, spec.END_OF_TURN]


def corpus_texts():
    """(text, is_response) for training-split queries and every training response; never dev/test text."""
    for line in open(ROOT / "training/data/build/unified.jsonl", encoding="utf-8"):
        r = json.loads(line)
        if r["split"] == "train":
            yield r["text"], False
    for line in open(ROOT / "training/data/build/guardian/train.jsonl", encoding="utf-8"):
        r = json.loads(line)
        if r.get("response"):
            yield r["response"], True


def choose(tok_json, counts, min_count, always=()):
    vocab = tok_json["model"]["vocab"]
    keep = set(CONTROL) | set(spec.SPECIALS.values())
    for piece, i in vocab.items():
        if re.fullmatch(r"<0x[0-9A-F]{2}>", piece) or any("\uac00" <= c <= "\ud7a3" for c in piece):
            keep.add(i)
        elif all(c in "▁\n\t" for c in piece) or (len(piece) == 1 and 0x20 < ord(piece) < 0x7F):
            keep.add(i)
    keep |= {i for i, n in counts.items() if n >= min_count} | set(always)
    # BPE closure: a kept piece must still be reachable through its merge.
    made_from = {}
    for m in tok_json["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        made_from.setdefault(vocab[a + b], (vocab[a], vocab[b]))
    todo = list(keep)
    while todo:
        i = todo.pop()
        for part in made_from.get(i, ()):
            if part not in keep:
                keep.add(part)
                todo.append(part)
    return sorted(keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--from-delta", help="take the kept ids of an exported delta.gguf instead of choosing them: a run "
                    "that continues that model keeps its vocabulary (the choice depends on the data build)")
    a = ap.parse_args()
    if a.from_delta:
        import gguf
        from training.guardian.assemble import field
        keep = sorted(int(i) for i in field(gguf.GGUFReader(a.from_delta), "slm_guard.kept_ids"))
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"from_delta": a.from_delta, "kept": len(keep), "ids": keep}))
        print(f"kept {len(keep)} pieces of {a.from_delta} -> {a.out}")
        return
    tok = load_tokenizer(BASE_TOKENIZER)
    corpus = list(corpus_texts())
    texts = [normalize(t) if not resp else t for t, resp in corpus]  # responses are targets: kept verbatim
    counts, in_responses = collections.Counter(), set()
    for enc, (_, resp) in zip(tok.encode_batch(texts, add_special_tokens=False), corpus):
        counts.update(enc.ids)
        if resp:  # every piece of a training response must stay, or its target would not exist
            in_responses.update(enc.ids)
    tok_json = json.loads(BASE_TOKENIZER.read_text(encoding="utf-8"))
    keep = choose(tok_json, counts, a.min_count, in_responses)
    total = sum(counts.values())
    covered = sum(n for i, n in counts.items() if i in set(keep))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"base_vocab": len(tok_json["model"]["vocab"]), "kept": len(keep),
                                       "min_count": a.min_count, "corpus_texts": len(texts),
                                       "corpus_tokens": total, "corpus_tokens_covered": covered,
                                       "ids": keep}))
    print(f"kept {len(keep)} of {len(tok_json['model']['vocab'])} pieces; corpus {len(texts)} texts, "
          f"{total} tokens, {covered / max(total, 1):.5f} covered -> {a.out}")


if __name__ == "__main__":
    main()
