//! The reply gate: a guardian reply is released sentence by sentence, each only after the classifier's reply check
//! (`reply_unsafe`, `Guard::check_reply`) has read the reply so far. A 270M model can still write a harmful sentence
//! ("...I can help you make bombs."); the gate makes sure such a sentence never reaches the user: it is withheld and
//! generation stops there (`StopReason::Unsafe`).
//! So is a sentence that gives a phone number which is not a verified help line (`helpline.rs`).
//! When nothing could be released, the reply becomes the built-in safe reply in the query's language.
//! A reply to a message the classifier rates a self-harm risk ends with a verified crisis line in the message's
//! language when the model gave none (it often does not: `training/guardian/RUN_NOTES.md`).
//!
//! The gate is generic over the check (`is_unsafe(reply_so_far)`), so it is tested here without a model; the JS API
//! checks with the loaded classifier and its policy.

use crate::error::Result;
use crate::guard::Guard;
use crate::guardian::{Generation, Guardian, RespondOptions, Response, StopReason, SENTENCE_ENDS};
use crate::policy::Policy;
use crate::verdict::Verdict;

/// What the gate knows of the message it answers, from the classifier's verdict on it.
#[derive(Debug, Clone)]
pub struct Query {
    /// `ko` or `en`: the language of the built-in reply and of the crisis line.
    lang: &'static str,
    /// The verdict's category: which built-in reply stands in when nothing passes the check.
    category: Option<String>,
    /// `self_harm` reaches its threshold, or is the top category of a flagged message: the reply must give a
    /// crisis line.
    self_harm: bool,
}

impl Query {
    /// `verdict`: the classifier's on `text` (`None` if it could not run: the generic built-in reply, no line added).
    pub fn new(text: &str, verdict: Option<&Verdict>) -> Self {
        let self_harm = verdict.is_some_and(|v| {
            v.categories.get("self_harm") == Some(&true)
                || v.category.as_deref() == Some("self_harm")
        });
        Self {
            lang: crate::reply::language(text),
            category: verdict.and_then(|v| v.category.clone()),
            self_harm,
        }
    }

    /// The classifier's reading of `text` under `policy`.
    pub fn read(guard: &Guard, policy: &Policy, text: &str) -> Self {
        Self::new(text, guard.classify(text, policy).ok().as_ref())
    }

    /// True when the reply must give a crisis line.
    pub fn self_harm(&self) -> bool {
        self.self_harm
    }

    /// The built-in reply when nothing passed the check (self-harm's, with its crisis lines, for a message at risk).
    fn fallback(&self) -> &'static str {
        let category = if self.self_harm {
            Some("self_harm")
        } else {
            self.category.as_deref()
        };
        crate::reply::safe_reply(category, self.lang)
    }
}

/// What one `ReplyGate::step` did.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// A token was generated into the current sentence, which is not complete yet.
    Held,
    /// Checked text the user may see.
    Released(String),
    /// The reply is over (ended, cancelled, or a sentence was withheld).
    End,
}

#[derive(Debug)]
pub struct ReplyGate {
    query: Query,
    /// Generated, not yet checked (the current sentence).
    pending: String,
    /// Checked and released.
    released: String,
    withheld: bool,
    done: bool,
    /// The crisis line was released (`closing`).
    crisis_line_added: bool,
}

impl ReplyGate {
    pub fn new(query: Query) -> Self {
        Self {
            query,
            pending: String::new(),
            released: String::new(),
            withheld: false,
            done: false,
            crisis_line_added: false,
        }
    }

    /// The next checked piece (one or more whole sentences), or `None` at the end of the reply, whether the model
    /// ended it or the check withheld a sentence.
    pub fn next(
        &mut self,
        gen: &mut Generation,
        g: &Guardian,
        mut is_unsafe: impl FnMut(&str) -> Result<bool>,
    ) -> Result<Option<String>> {
        loop {
            match self.step(gen, g, &mut is_unsafe)? {
                Step::Held => continue,
                Step::Released(s) => return Ok(Some(s)),
                Step::End => return Ok(None),
            }
        }
    }

    /// One piece of generation: held (the sentence is not complete yet), released, or the end. Lets a caller
    /// yield between tokens (the JS event loop) while a sentence is being written.
    pub fn step(
        &mut self,
        gen: &mut Generation,
        g: &Guardian,
        is_unsafe: &mut impl FnMut(&str) -> Result<bool>,
    ) -> Result<Step> {
        if self.done {
            return Ok(Step::End);
        }
        let piece = gen.next(g)?;
        self.absorb(piece, gen, is_unsafe)
    }

    /// `step` with the generation on the backend chosen at load (`Generation::next_async`).
    pub async fn step_async(
        &mut self,
        gen: &mut Generation,
        g: &Guardian,
        is_unsafe: &mut impl FnMut(&str) -> Result<bool>,
    ) -> Result<Step> {
        if self.done {
            return Ok(Step::End);
        }
        let piece = gen.next_async(g).await?;
        self.absorb(piece, gen, is_unsafe)
    }

    /// Add the generation's next piece (`None`: it ended) to the pending sentence; check it once it is whole.
    fn absorb(
        &mut self,
        piece: Option<String>,
        gen: &Generation,
        is_unsafe: &mut impl FnMut(&str) -> Result<bool>,
    ) -> Result<Step> {
        let released = match piece {
            Some(piece) => {
                self.pending.push_str(&piece);
                // checked once the pending text ends a sentence (trailing spaces aside)
                if !self.pending.trim_end().ends_with(SENTENCE_ENDS) {
                    return Ok(Step::Held);
                }
                self.check(is_unsafe)?
            }
            None => {
                self.done = true;
                // an unfinished sentence cut by a cancel is dropped, and one cut by the repetition stop too unless
                // it is all there is (as `Response::text` does)
                let keep_tail = match gen.stop_reason() {
                    Some(StopReason::Cancelled) => false,
                    Some(StopReason::Repetition) => self.released.is_empty(),
                    _ => true,
                };
                if keep_tail && !self.pending.trim().is_empty() {
                    self.check(is_unsafe)?
                } else {
                    None
                }
            }
        };
        // the reply is over (it ended, or a sentence was withheld) unless the user cancelled it
        let closing = if self.done && gen.stop_reason() != Some(StopReason::Cancelled) {
            self.closing()
        } else {
            None
        };
        Ok(match (released, closing) {
            (None, None) => Step::End,
            (r, c) => Step::Released(r.unwrap_or_default() + c.as_deref().unwrap_or("")),
        })
    }

    /// The crisis line a reply to a message at risk of self-harm ends with, when the released reply gives none
    /// (an empty reply gets the self-harm built-in reply instead, which has the lines).
    fn closing(&mut self) -> Option<String> {
        if !self.query.self_harm
            || self.released.trim().is_empty()
            || crate::helpline::gives_crisis_line(&self.released)
        {
            return None;
        }
        let line = format!(" {}", crate::reply::crisis_line(self.query.lang));
        self.released.push_str(&line);
        self.crisis_line_added = true;
        Some(line)
    }

    /// Check the reply with the pending sentence: release it, or withhold it and end the reply. A sentence with a
    /// phone number that is not a verified help line is withheld too (`helpline.rs`): models misremember digits.
    fn check(
        &mut self,
        is_unsafe: &mut impl FnMut(&str) -> Result<bool>,
    ) -> Result<Option<String>> {
        let candidate = format!("{}{}", self.released, self.pending);
        if crate::helpline::unknown_number(&self.pending).is_some() || is_unsafe(candidate.trim())?
        {
            self.withheld = true;
            self.done = true;
            self.pending.clear();
            return Ok(None);
        }
        let piece = std::mem::take(&mut self.pending);
        self.released.push_str(&piece);
        Ok(Some(piece))
    }

    /// True once a sentence was withheld.
    pub fn withheld(&self) -> bool {
        self.withheld
    }

    /// The final response: only released text (with the crisis line it may have gained); `Unsafe` when a sentence
    /// was withheld; when nothing could be released, the built-in safe reply for the query's category (a crisis
    /// line for self-harm) in the query's language.
    pub fn into_response(self, r: Response) -> Response {
        let text = self.released.trim().to_string();
        let stopped = if self.withheld {
            StopReason::Unsafe
        } else {
            r.stopped
        };
        let (text, fallback) = if text.is_empty() && self.withheld {
            (self.query.fallback().to_string(), true)
        } else {
            (text, false)
        };
        Response {
            text,
            stopped,
            fallback,
            crisis_line_added: self.crisis_line_added,
            ..r
        }
    }
}

/// The classifier as the gate's check: is the reply so far unsafe to show under `policy` (its reply check,
/// `Guard::check_reply`)?
pub fn classifier_check<'a>(
    guard: &'a Guard,
    policy: &'a Policy,
) -> impl FnMut(&str) -> Result<bool> + 'a {
    move |so_far| Ok(guard.check_reply(so_far, policy)?.flagged)
}

/// End a gated generation: the response, with the built-in reply for the query's category when nothing passed.
pub fn finish(gate: ReplyGate, gen: Generation) -> Response {
    gate.into_response(gen.into_response())
}

/// `Guardian::respond` with every sentence checked by `guard` before `on_piece` sees it (`on_piece` returning
/// false cancels).
pub fn respond_checked(
    g: &Guardian,
    guard: &Guard,
    policy: &Policy,
    text: &str,
    opts: &RespondOptions,
    mut on_piece: impl FnMut(&str) -> bool,
) -> Result<Response> {
    let mut gen = g.start(text, opts)?;
    let mut gate = ReplyGate::new(Query::read(guard, policy, text));
    let mut check = classifier_check(guard, policy);
    while let Some(piece) = gate.next(&mut gen, g, &mut check)? {
        if !on_piece(&piece) {
            gen.cancel();
            break;
        }
    }
    Ok(finish(gate, gen))
}
