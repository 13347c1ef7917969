"""Text preparation applied before tokenization, in training and at run time.

The Rust runtime implements the same function (`src/text/normalize.rs`); `tests/` proves the two agree on the
reference inputs exported by `training/classifier/export.py`. Steps, in order:
1. NFKC (folds full-width letters, compatibility jamo variants, ligatures, circled letters used for evasion);
2. delete invisible format characters used to split words past a filter (zero-width, bidi controls, soft hyphen,
   Hangul fillers, variation selectors, tag characters);
3. turn every other control character into a space;
4. fold runs of whitespace to one space and trim.
Case, punctuation, jamo (ㅅㅂ) and emoji are kept: they carry meaning the model learned.
"""
import unicodedata

# Ranges (inclusive) deleted outright. Keep in sync with src/text/normalize.rs.
INVISIBLE = [
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # arabic letter mark
    (0x115F, 0x1160),  # hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # khmer inherent vowels (invisible)
    (0x180B, 0x180F),  # mongolian variation selectors / vowel separator
    (0x200B, 0x200F),  # zero-width space/non-joiner/joiner, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated format chars
    (0x3164, 0x3164),  # hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space / BOM
    (0xFFA0, 0xFFA0),  # halfwidth hangul filler
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0xE0000, 0xE007F),  # tag characters
    (0xE0100, 0xE01EF),  # variation selectors supplement
]

# Unicode White_Space characters (Python's str.split() uses the same set plus the ASCII separators 0x1C-0x1F).
WHITESPACE = set(
    [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
    + list(range(0x2000, 0x200B))
)


def _invisible(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in INVISIBLE)


def _control(cp: int) -> bool:
    return cp < 0x20 or 0x7F <= cp <= 0x9F


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    out = []
    pending_space = False
    for ch in text:
        cp = ord(ch)
        if _invisible(cp):
            continue
        if cp in WHITESPACE or _control(cp) or 0xD800 <= cp <= 0xDFFF:
            pending_space = bool(out)
            continue
        if pending_space:
            out.append(" ")
            pending_space = False
        out.append(ch)
    return "".join(out)
