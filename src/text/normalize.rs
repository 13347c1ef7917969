//! The same function as `training/common/normalize.py` (the model was trained on its output; `tests/parity.rs`
//! checks both agree on the exported reference inputs):
//! NFKC, then delete invisible format characters used to split words past filters, turn other control characters
//! into spaces, fold whitespace runs to one space and trim. Case, punctuation, jamo and emoji are kept.

use unicode_normalization::UnicodeNormalization;

/// Inclusive ranges deleted outright. Keep in sync with `training/common/normalize.py`.
const INVISIBLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x061C, 0x061C),   // arabic letter mark
    (0x115F, 0x1160),   // hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),   // khmer inherent vowels
    (0x180B, 0x180F),   // mongolian variation selectors / vowel separator
    (0x200B, 0x200F),   // zero-width space/non-joiner/joiner, LRM, RLM
    (0x202A, 0x202E),   // bidi embeddings and overrides
    (0x2060, 0x206F),   // word joiner, invisible operators, bidi isolates
    (0x3164, 0x3164),   // hangul filler
    (0xFE00, 0xFE0F),   // variation selectors
    (0xFEFF, 0xFEFF),   // zero-width no-break space / BOM
    (0xFFA0, 0xFFA0),   // halfwidth hangul filler
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0xE0000, 0xE007F), // tag characters
    (0xE0100, 0xE01EF), // variation selectors supplement
];

fn is_invisible(c: char) -> bool {
    let cp = c as u32;
    INVISIBLE.iter().any(|&(lo, hi)| lo <= cp && cp <= hi)
}

fn is_space_or_control(c: char) -> bool {
    let cp = c as u32;
    matches!(
        cp,
        0x09..=0x0D | 0x20 | 0x85 | 0xA0 | 0x1680 | 0x2000..=0x200A | 0x2028 | 0x2029 | 0x202F | 0x205F | 0x3000
    ) || cp < 0x20
        || (0x7F..=0x9F).contains(&cp)
}

/// Normalise `text` for the classifier.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.nfkc() {
        if is_invisible(c) {
            continue;
        }
        if is_space_or_control(c) {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn folds_evasion_tricks() {
        assert_eq!(
            normalize("  폭\u{200b}탄 만드는   법\n\n"),
            "폭탄 만드는 법"
        );
        assert_eq!(normalize("ｈｅｌｌｏ\u{202e}world"), "helloworld");
        assert_eq!(normalize("a\u{0}b\tc"), "a b c");
        assert_eq!(normalize("\u{3164}ㅅㅂ"), "\u{1109}\u{1107}"); // NFKC maps compatibility jamo to conjoining jamo
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \u{200b} \n"), "");
    }

    #[test]
    fn keeps_meaningful_characters() {
        assert_eq!(
            normalize("Hello, World! 🙂 ㅋㅋ"),
            "Hello, World! 🙂 \u{110f}\u{110f}"
        );
    }

    #[test]
    fn idempotent() {
        for s in [
            "폭 탄\u{200d} 제조",
            "Ｆｕｌｌ　ｗｉｄｔｈ",
            "x\u{fe0f}y",
            "tab\tand\r\nnewline",
        ] {
            let once = normalize(s);
            assert_eq!(normalize(&once), once);
        }
    }
}
