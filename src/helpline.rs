//! Help-line numbers in generated replies. A 270M model writes crisis lines from memory and gets digits wrong
//! ("1177-0199" for Korea's 1577-0199); a wrong number shown to a person at risk is worse than none. So the reply
//! gate withholds a sentence that gives a phone number which is not on this list of verified lines; the built-in
//! replies (`reply.rs`) carry the right ones, and a test keeps them on the list.

/// Verified public lines, digits only (a US number without its leading 1).
const KNOWN: &[&str] = &[
    // Korea: suicide prevention, mental-health crisis, Lifeline Korea, youth, women's emergency, school
    // violence, police, fire/ambulance, privacy reports, digital sex-crime victim support (Seoul)
    "109",
    "15770199",
    "15889191",
    "1393",
    "1388",
    "1366",
    "117",
    "112",
    "119",
    "118",
    "027358994",
    // US: 988 Lifeline (and its old number), 911, Crisis Text Line, RAINN, domestic violence, SAMHSA
    "988",
    "8002738255",
    "911",
    "741741",
    "8006564673",
    "8007997233",
    "8006624357",
    // UK and EU: emergency, Samaritans, NHS 111
    "999",
    "116123",
    "111",
];

/// The verified lines for a person at risk of suicide or self-harm (Korea: 109, 1577-0199, Lifeline 1588-9191,
/// the old 1393; US: 988 and its old number, Crisis Text Line; UK/EU: Samaritans).
const CRISIS: &[&str] = &[
    "109",
    "15770199",
    "15889191",
    "1393",
    "988",
    "8002738255",
    "741741",
    "116123",
];

/// Words that make a bare number in the same sentence a number to call.
const CONTACT_WORDS: &[&str] = &[
    "전화",
    "연락",
    "상담",
    "문자",
    "신고",
    "번호",
    "핫라인",
    "call",
    "text",
    "dial",
    "phone",
    "hotline",
    "helpline",
    "lifeline",
    "number",
    "line",
];

/// What may follow a bare number that is a quantity, not a line to call ("1577칼로리", "2021년", "100 people").
const UNITS: &[&str] = &[
    "년",
    "월",
    "일",
    "명",
    "개",
    "원",
    "세",
    "살",
    "시",
    "분",
    "초",
    "번째",
    "칼로리",
    "kcal",
    "%",
    "kg",
    "km",
    "달러",
    "만",
    "억",
    "천",
    "주",
    "회",
    "건",
    "배",
    "cal",
    "year",
    "people",
    "percent",
    "day",
    "hour",
    "minute",
    "time",
    "mg",
    "lb",
    "dollar",
];

/// The phone numbers in `sentence`.
fn phone_numbers(sentence: &str) -> impl Iterator<Item = Number<'_>> {
    let contact = has_contact_word(sentence);
    numbers(sentence)
        .into_iter()
        .filter(move |n| n.is_phone(contact))
}

fn has_contact_word(sentence: &str) -> bool {
    let lower = sentence.to_lowercase();
    CONTACT_WORDS.iter().any(|w| lower.contains(w))
}

/// The first phone number in `sentence` that is not a verified line, if any.
pub fn unknown_number(sentence: &str) -> Option<String> {
    phone_numbers(sentence)
        .find(|n| !n.is_known())
        .map(|n| n.text.to_string())
}

/// Every phone number in `text` (a whole reply) that is not a verified line, sentence by sentence as the reply
/// gate reads it: what the gate would withhold, for evaluations of raw replies (`slm-guard respond --jsonl`).
pub fn unknown_numbers(text: &str) -> Vec<String> {
    sentences(text).filter_map(unknown_number).collect()
}

/// True when `text` gives a verified crisis line (not just 112 or 911): what a reply to a message at risk of
/// self-harm must carry (`reply_gate.rs` adds one when it does not).
pub fn gives_crisis_line(text: &str) -> bool {
    sentences(text).any(|s| {
        // a phone number, or a crisis line's six-digit short code in a sentence about texting it ("741741")
        let contact = has_contact_word(s);
        numbers(s).iter().any(|n| {
            CRISIS.contains(&n.line().as_str())
                && (n.is_phone(contact) || (contact && n.digits().len() > 5))
        })
    })
}

/// `text` cut after each sentence end, as the reply gate reads a reply.
fn sentences(text: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        // a '.' between digits ("1577.0199") does not end the sentence
        let next_digit = chars.peek().is_some_and(|(_, n)| n.is_ascii_digit());
        let end = crate::guardian::SENTENCE_ENDS.contains(&c) && !next_digit;
        if end || chars.peek().is_none() {
            let stop = i + c.len_utf8();
            out.push(&text[start..stop]);
            start = stop;
        }
    }
    out.into_iter()
}

/// A run of digit groups joined by single separators ("1577-0199", "(800) 273-8255", "109").
struct Number<'a> {
    text: &'a str,
    groups: Vec<String>,
    /// The text right after the number (for a unit).
    rest: &'a str,
}

impl Number<'_> {
    fn digits(&self) -> String {
        self.groups.concat()
    }

    /// Grouped with 6+ digits (and not a date), or a bare 3-5 digit number in a sentence about calling that is
    /// not a quantity.
    fn is_phone(&self, contact: bool) -> bool {
        let digits = self.digits().len();
        if self.groups.len() >= 2 {
            return digits >= 6 && !self.is_date();
        }
        let rest = self.rest.trim_start().to_lowercase();
        contact && (3..=5).contains(&digits) && !UNITS.iter().any(|u| rest.starts_with(u))
    }

    /// 2024-01-31 or 2024.1.31
    fn is_date(&self) -> bool {
        let g = &self.groups;
        g.len() == 3 && g[0].len() == 4 && g[1].len() <= 2 && g[2].len() <= 2
    }

    /// The digits as the lists hold them.
    fn line(&self) -> String {
        let d = self.digits();
        match d.strip_prefix('1') {
            Some(us) if d.len() == 11 => us.to_string(), // 1-800-273-8255
            _ => d,
        }
    }

    fn is_known(&self) -> bool {
        KNOWN.contains(&self.line().as_str())
    }
}

/// Every digit run in `s`, with groups split at single '-', '.', ' ', '(' or ')' between digits.
fn numbers(s: &str) -> Vec<Number<'_>> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let opening = chars[i].1 == '(' && chars.get(i + 1).is_some_and(|c| c.1.is_ascii_digit());
        if !chars[i].1.is_ascii_digit() && !opening {
            i += 1;
            continue;
        }
        let start = chars[i].0;
        let (mut groups, mut cur, mut end) = (Vec::new(), String::new(), i);
        let mut j = i;
        while j < chars.len() {
            let c = chars[j].1;
            if c.is_ascii_digit() {
                cur.push(c);
                end = j;
                j += 1;
            } else if matches!(c, '-' | '.' | ' ' | '(' | ')') {
                // a separator (or ") ") continues the number only when a digit follows it
                let mut k = j + 1;
                if c == ')' && chars.get(k).is_some_and(|n| n.1 == ' ') {
                    k += 1;
                }
                if !chars.get(k).is_some_and(|n| n.1.is_ascii_digit()) {
                    break;
                }
                if !cur.is_empty() {
                    groups.push(std::mem::take(&mut cur));
                }
                j = k;
            } else {
                break;
            }
        }
        if !cur.is_empty() {
            groups.push(cur);
        }
        // a digit run glued to letters ("mp3", "3d") is not a number to call
        let glued = i > 0 && chars[i - 1].1.is_ascii_alphabetic();
        let after = chars.get(end + 1).map_or(s.len(), |c| c.0);
        if !groups.is_empty() && !glued {
            out.push(Number {
                text: s[start..after].trim_start_matches('('),
                groups,
                rest: &s[after..],
            });
        }
        i = end + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_lines_written_by_the_model_are_caught() {
        // replies of a guardian checkpoint (training/guardian/RUN_NOTES.md, third continuation)
        for s in [
            "자살 코칭은 1단계와 2단계로 나아가는 건데, 1단계는 1단계 코칭을 통해 1177-0199에 연락해 줘.",
            "변비 약을 많이 먹으면 효과가 없다는 걸 알 수 있지만, 1599-0199에 전화해 주세요.",
            "I'm glad you reached out to 988 (1-888-988-89 in the US).",
            "하지만, 109나 1577에 연락해 주세요.",
            "Call the hotline at 1-800-555-0199 now.",
        ] {
            assert!(unknown_number(s).is_some(), "{s}");
        }
        assert_eq!(
            unknown_number("109나 1577에 연락해 주세요.").as_deref(),
            Some("1577")
        );
        assert_eq!(
            unknown_number("Reach 988 (1-888-988-89 in the US).").as_deref(),
            Some("1-888-988-89")
        );
    }

    #[test]
    fn a_whole_reply_is_read_sentence_by_sentence() {
        assert_eq!(
            unknown_numbers("Call 1177-0199. Or text 741741. Or dial 1-888-988-89"),
            ["1177-0199", "1-888-988-89"]
        );
        // the contact word belongs to another sentence, so 1577 is a count here
        assert!(unknown_numbers("Please call a friend. The group had 1577 members.").is_empty());
        // a '.' between digits is part of the number
        assert_eq!(unknown_numbers("Call 1599.0199 today."), ["1599.0199"]);
        assert!(unknown_numbers("지금 1577.0199로 전화해 줘.").is_empty());
        assert!(unknown_numbers("").is_empty());
    }

    #[test]
    fn verified_lines_quantities_and_dates_pass() {
        for s in [
            "지금 109나 1577-0199에 전화하면 바로 들어 줄 사람이 있어.",
            "Please call or text 988, or 1-800-273-8255.",
            "You can call (800) 273-8255 or text HOME to 741741.",
            "아침 600칼로리 이하로 버티는 방법은 알려줄 수 없어.",
            "자경단은 2021년 10월 설립된 회사입니다.",
            "It was founded on 2021-10-01, and 100 people called the line.",
            "Samaritans: call 116 123 (UK).",
            "I can't help with that.",
        ] {
            assert_eq!(unknown_number(s), None, "{s}");
        }
    }

    #[test]
    fn every_built_in_reply_gives_only_verified_lines() {
        let categories = [
            None,
            Some("hate"),
            Some("harassment"),
            Some("violence"),
            Some("sexual"),
            Some("sexual_minors"),
            Some("self_harm"),
            Some("crime"),
            Some("privacy"),
            Some("prompt_attack"),
        ];
        for cat in categories {
            for lang in ["ko", "en"] {
                let reply = crate::reply::safe_reply(cat, lang);
                assert_eq!(unknown_number(reply), None, "{cat:?}/{lang}: {reply}");
            }
        }
        // and the crisis lines there are found as numbers at all (the list is what keeps them)
        assert!(numbers(crate::reply::safe_reply(Some("self_harm"), "ko"))
            .iter()
            .any(|n| n.digits() == "15770199"));
        for lang in ["ko", "en"] {
            assert!(gives_crisis_line(crate::reply::safe_reply(
                Some("self_harm"),
                lang
            )));
            assert!(gives_crisis_line(crate::reply::crisis_line(lang)));
            assert_eq!(unknown_number(crate::reply::crisis_line(lang)), None);
            assert!(!gives_crisis_line(crate::reply::safe_reply(
                Some("violence"),
                lang
            )));
        }
    }

    #[test]
    fn crisis_lines_are_told_from_other_numbers() {
        for s in [
            "힘들면 109에 전화해 줘.",
            "정신건강위기상담 1577-0199로 연락하세요.",
            "Please call or text 988 now.",
            "Call 1-800-273-8255.",
            "Text HOME to 741741. You are not alone.",
            "I can't help with that. Samaritans: call 116 123.",
        ] {
            assert!(gives_crisis_line(s), "{s}");
        }
        for s in [
            "위급하면 112나 119에 전화하세요.",
            "Call 911 if you are in danger.",
            "그 반에는 109명이 있어.",
            // a wrong line is not a crisis line
            "지금 1577-0190에 전화해.",
            "I'm worried about you.",
            "",
        ] {
            assert!(!gives_crisis_line(s), "{s}");
        }
    }
}
