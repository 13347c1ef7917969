//! The classifier's tokenizer (pruned XLM-R Unigram, `tokenizer.json`) and the windowing of long inputs.

use tokenizers::Tokenizer;

use crate::error::{GuardError, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    bos: u32,
    eos: u32,
    vocab: usize,
}

/// One model input: `<s>` + a slice of the content tokens + `</s>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub ids: Vec<u32>,
}

impl TextTokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let inner =
            Tokenizer::from_bytes(json).map_err(|e| GuardError::Tokenizer(e.to_string()))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| GuardError::Tokenizer(format!("no `{t}` token")))
        };
        let (bos, eos) = (id("<s>")?, id("</s>")?);
        let vocab = inner.get_vocab_size(true);
        Ok(Self {
            inner,
            bos,
            eos,
            vocab,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Content token ids of already-normalised text (no special tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| GuardError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Split content ids into overlapping windows of at most `max_tokens` (specials included), a new window every
    /// `stride` content tokens, the last aligned to the end; mirrors `windows()` in training/classifier/export.py.
    pub fn windows(&self, content: &[u32], max_tokens: usize, stride: usize) -> Vec<Window> {
        let c = max_tokens - 2;
        let wrap = |s: &[u32]| {
            let mut ids = Vec::with_capacity(s.len() + 2);
            ids.push(self.bos);
            ids.extend_from_slice(s);
            ids.push(self.eos);
            Window { ids }
        };
        if content.len() <= c {
            return vec![wrap(content)];
        }
        let mut starts: Vec<usize> = (0..=content.len() - c).step_by(stride).collect();
        if starts.last().is_some_and(|&s| s + c < content.len()) {
            starts.push(content.len() - c);
        }
        starts
            .into_iter()
            .map(|s| wrap(&content[s..s + c]))
            .collect()
    }
}
