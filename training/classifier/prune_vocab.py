"""Prune the XLM-R vocabulary (250,002 pieces) to what Korean + English need, and remap the tokenizer.

Kept: the special tokens; every piece the training corpus (and the profanity lexicons shipped with the raw data)
actually uses; and every single-character piece for Hangul syllables and jamo, ASCII and common punctuation, so that
any Korean/English text still tokenizes without <unk> (pieces that were dropped decompose into kept shorter pieces).
Old ids keep their relative order; `old_ids[new_id]` maps the embedding rows. The word embedding is frozen during
fine-tuning, so pruning after training is exact for every text whose segmentation is unchanged.
"""
import copy
import json
import unicodedata
from collections import Counter

from tokenizers import Tokenizer


def allowed_char(c):
    cp = ord(c)
    return (0x20 <= cp < 0x7F or 0xAC00 <= cp <= 0xD7A3 or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F
            or 0x2000 <= cp <= 0x206F or 0x3000 <= cp <= 0x303F or 0xFF01 <= cp <= 0xFF5E or cp == 0x2581
            or unicodedata.category(c).startswith("P") and cp < 0x3100)


def select_pieces(tok_json, corpus, min_count=1):
    """Return sorted old ids to keep."""
    vocab = tok_json["model"]["vocab"]
    tok = Tokenizer.from_str(json.dumps(tok_json))
    counts = Counter()
    for enc in tok.encode_batch(corpus, add_special_tokens=False):
        counts.update(enc.ids)
    keep = {i for i, n in counts.items() if n >= min_count}
    keep |= {t["id"] for t in tok_json["added_tokens"] if t["content"] != "<mask>"}
    for i, (piece, _) in enumerate(vocab):
        body = piece.replace("\u2581", "")
        if len(body) <= 1 and all(allowed_char(c) for c in piece):
            keep.add(i)
    return sorted(keep), counts


def remap_tokenizer(tok_json, old_ids):
    new = copy.deepcopy(tok_json)
    vocab = tok_json["model"]["vocab"]
    index = {old: new_id for new_id, old in enumerate(old_ids)}
    new["model"]["vocab"] = [vocab[i] for i in old_ids]
    new["model"]["unk_id"] = index[tok_json["model"]["unk_id"]]
    new["added_tokens"] = [dict(t, id=index[t["id"]]) for t in tok_json["added_tokens"] if t["id"] in index]
    post = new["post_processor"]
    for name, spec in post.get("special_tokens", {}).items():
        spec["ids"] = [index[i] for i in spec["ids"]]
    return new


def compare(orig_json, pruned_json, texts):
    """Fraction of texts whose token pieces are unchanged, and <unk> counts before/after."""
    a = Tokenizer.from_str(json.dumps(orig_json))
    b = Tokenizer.from_str(json.dumps(pruned_json))
    ea, eb = a.encode_batch(texts), b.encode_batch(texts)
    same = sum(x.tokens == y.tokens for x, y in zip(ea, eb))
    unk_a = sum(t == "<unk>" for x in ea for t in x.tokens)
    unk_b = sum(t == "<unk>" for y in eb for t in y.tokens)
    tokens_a = sum(len(x.ids) for x in ea)
    tokens_b = sum(len(y.ids) for y in eb)
    return dict(texts=len(texts), unchanged=same / max(1, len(texts)), unk_before=unk_a, unk_after=unk_b,
                tokens_before=tokens_a, tokens_after=tokens_b)
