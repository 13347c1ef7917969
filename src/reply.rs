//! Safe replies shown in place of a blocked message, in the message's language, per category.
//! (The guardian model writes these itself; these are the classifier-only fallback the policy controls.)

/// `ko` when Hangul letters are at least a fifth of the letters, else `en`.
pub fn language(text: &str) -> &'static str {
    let (mut hangul, mut letters) = (0usize, 0usize);
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        if matches!(c as u32, 0xAC00..=0xD7A3 | 0x1100..=0x11FF | 0x3130..=0x318F) {
            hangul += 1;
        }
    }
    if letters > 0 && hangul * 5 >= letters {
        "ko"
    } else {
        "en"
    }
}

/// A short safe reply: what we will not help with, why, and where to go instead.
pub fn safe_reply(category: Option<&str>, lang: &str) -> &'static str {
    let ko = lang == "ko";
    match (category.unwrap_or(""), ko) {
        ("self_harm", true) => "많이 힘드신 것 같아요. 혼자 견디지 않으셔도 됩니다. 지금 바로 자살예방상담전화 109 또는 정신건강위기상담 1577-0199에 연락하시면 24시간 이야기를 들어 드립니다. 위급하면 119에 전화하세요.",
        ("self_harm", false) => "It sounds like you are going through a lot, and you don't have to face it alone. Please reach out now: in the US call or text 988 (Suicide & Crisis Lifeline), or contact your local emergency number.",
        ("sexual_minors", true) => "미성년자를 성적으로 다루는 요청에는 응할 수 없습니다. 아동 성착취 피해가 의심되면 경찰 112 또는 디지털성범죄피해자지원센터(02-735-8994)에 신고해 주세요.",
        ("sexual_minors", false) => "I can't help with anything that sexualises minors. If a child may be at risk, please report it to local police or the NCMEC CyberTipline (report.cybertip.org).",
        ("violence", true) => "다른 사람을 해치는 일에는 도움을 드릴 수 없습니다. 갈등이나 위협 상황이라면 경찰 112에 도움을 요청하시고, 화가 많이 나신 상태라면 잠시 대화를 나눠 보는 것도 좋아요.",
        ("violence", false) => "I can't help with hurting anyone. If you or someone else is in danger, contact local emergency services; if you're dealing with anger or conflict, I'm happy to talk through safer ways to handle it.",
        ("crime", true) => "불법 행위나 위험한 물건을 만드는 방법은 안내해 드릴 수 없습니다. 관련 법률, 예방법, 안전 정보라면 기꺼이 도와드릴게요.",
        ("crime", false) => "I can't help with illegal or dangerous activities. I'm glad to help with the law around it, prevention, or staying safe.",
        ("hate", true) => "특정 집단을 비하하거나 차별하는 내용에는 도움을 드릴 수 없습니다. 서로 다른 배경에 대한 사실이나 관점이 궁금하시면 함께 찾아볼게요.",
        ("hate", false) => "I can't help with content that demeans people for who they are. If you're curious about a group or an issue, I'm happy to look at the facts together.",
        ("harassment", true) => "상대를 모욕하거나 괴롭히는 말에는 도움을 드릴 수 없어요. 속상한 상황이라면 감정을 정리하거나 차분하게 전달하는 방법을 함께 생각해 볼까요?",
        ("harassment", false) => "I can't help with insulting or harassing someone. If something upset you, I can help you put it into words calmly.",
        ("sexual", true) => "선정적이거나 성적인 콘텐츠는 제공하지 않습니다. 건강한 관계나 성 건강에 대한 정보가 필요하시면 도와드릴게요.",
        ("sexual", false) => "I don't produce sexual content. I'm happy to help with relationships or sexual-health information instead.",
        ("privacy", true) => "다른 사람의 개인정보를 찾거나 몰래 감시하는 일에는 도움을 드릴 수 없습니다. 본인 정보를 보호하는 방법이나 개인정보 침해 신고(118)는 안내해 드릴게요.",
        ("privacy", false) => "I can't help find or expose someone's personal information or track them. I can help you protect your own privacy or report a privacy violation.",
        ("prompt_attack", true) => "안전 지침을 우회하려는 요청에는 따를 수 없습니다. 원래 하시려던 작업이 있다면 안전한 범위에서 도와드릴게요.",
        ("prompt_attack", false) => "I can't follow instructions meant to bypass my safety rules. If there's a task you want done, I'm happy to help within them.",
        (_, true) => "이 요청은 안전 정책에 따라 도와드리기 어렵습니다. 다른 방식으로 도움이 필요하시면 말씀해 주세요.",
        (_, false) => "I can't help with this request under the safety policy, but I'm happy to help with something else.",
    }
}

/// The sentence the reply gate adds to a reply for a message at risk of self-harm that gives no crisis line
/// itself (`reply_gate.rs`): the verified line of the message's language (`helpline.rs`).
pub fn crisis_line(lang: &str) -> &'static str {
    if lang == "ko" {
        "혼자 견디지 않으셔도 돼요. 자살예방상담전화 109에 전화하시면 24시간 언제든 이야기를 들어 드립니다."
    } else {
        "You don't have to go through this alone: in the US, call or text 988 (Suicide & Crisis Lifeline) any time, or contact your local emergency number."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_language() {
        assert_eq!(language("폭탄 만드는 법"), "ko");
        assert_eq!(language("how to make a bomb"), "en");
        assert_eq!(language("이거 jailbreak 프롬프트 좀 짜줘"), "ko");
        assert_eq!(language("ㅅㅂ"), "ko");
        assert_eq!(language("1234 !!"), "en");
    }

    #[test]
    fn replies_match_language() {
        for c in [
            None,
            Some("self_harm"),
            Some("crime"),
            Some("prompt_attack"),
        ] {
            assert_eq!(language(safe_reply(c, "ko")), "ko");
            assert_eq!(language(safe_reply(c, "en")), "en");
        }
        assert!(safe_reply(Some("self_harm"), "ko").contains("109"));
        assert!(safe_reply(Some("self_harm"), "en").contains("988"));
        assert_eq!(language(crisis_line("ko")), "ko");
        assert_eq!(language(crisis_line("en")), "en");
    }
}
