//! The reply gate: a guardian reply is released sentence by sentence, each only after the classifier has read the
//! reply so far. A 270M model can still write a harmful sentence ("...I can help you make bombs."); the gate makes
//! sure such a sentence never reaches the user: it is withheld and generation stops there (`StopReason::Unsafe`).
//! When nothing could be released, the reply becomes the built-in safe reply in the query's language.
//!
//! The gate is generic over the check (`is_unsafe(reply_so_far)`), so it is tested here without a model; the JS API
//! checks with the loaded classifier and its policy.

use crate::error::Result;
use crate::guardian::{Generation, Guardian, Response, StopReason};

/// Where a sentence ends: once the pending text ends with one of these (trailing spaces aside), it is checked.
const SENTENCE_ENDS: [char; 8] = ['.', '!', '?', '\n', '。', '！', '？', '…'];

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

#[derive(Debug, Default)]
pub struct ReplyGate {
    /// Generated, not yet checked (the current sentence).
    pending: String,
    /// Checked and released.
    released: String,
    withheld: bool,
    done: bool,
}

impl ReplyGate {
    pub fn new() -> Self {
        Self::default()
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
        let released = match gen.next(g)? {
            Some(piece) => {
                self.pending.push_str(&piece);
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
                if !keep_tail || self.pending.trim().is_empty() {
                    return Ok(Step::End);
                }
                self.check(is_unsafe)?
            }
        };
        Ok(released.map_or(Step::End, Step::Released))
    }

    /// Check the reply with the pending sentence: release it, or withhold it and end the reply.
    fn check(
        &mut self,
        is_unsafe: &mut impl FnMut(&str) -> Result<bool>,
    ) -> Result<Option<String>> {
        let candidate = format!("{}{}", self.released, self.pending);
        if is_unsafe(candidate.trim())? {
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

    /// The final response: only released text; `Unsafe` when a sentence was withheld; the built-in safe reply in
    /// the query's language when nothing could be released.
    pub fn into_response(self, r: Response, query: &str) -> Response {
        let text = self.released.trim().to_string();
        let stopped = if self.withheld {
            StopReason::Unsafe
        } else {
            r.stopped
        };
        let (text, fallback) = if text.is_empty() && self.withheld {
            let lang = crate::reply::language(query);
            (crate::reply::safe_reply(None, lang).to_string(), true)
        } else {
            (text, false)
        };
        Response {
            text,
            stopped,
            fallback,
            ..r
        }
    }
}
