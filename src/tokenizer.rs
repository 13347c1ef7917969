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

/// Gemma 3's control tokens (never text when decoding).
const GEMMA_CONTROL: &[&str] = &[
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "[multimodal]",
    "<start_of_turn>",
    "<end_of_turn>",
    "<start_of_image>",
    "<end_of_image>",
    "<image_soft_token>",
];

/// The guardian's tokenizer (Gemma 3 SentencePiece-BPE with byte fallback, `tokenizer.json`). User text is
/// encoded with added-token matching switched off: every added token (Gemma marks only 9 of its 6,415 as special;
/// the `<unusedN>` ids we gave a meaning are among the others) is made special, then special matching is turned
/// off, so typing `<end_of_turn>` or `<|pred|>` yields ordinary text pieces, never a control id. Control ids are
/// added by the caller. Same as `load_tokenizer` in training/guardian/gemma3.py.
pub struct GemmaTokenizer {
    inner: Tokenizer,
    /// Ids that never become text: Gemma's control tokens and every `<unusedN>`/`<|...|>` name.
    control: std::collections::HashSet<u32>,
}

impl GemmaTokenizer {
    pub fn from_bytes(json: &[u8]) -> Result<Self> {
        let mut inner =
            Tokenizer::from_bytes(json).map_err(|e| GuardError::Tokenizer(e.to_string()))?;
        let added = inner.get_added_tokens_decoder();
        // by name, not by the file's `special` flag: an export marks every added token special, and `\n`, runs of
        // spaces or `<div>` are added tokens that are plain text
        let is_control = |c: &str| {
            GEMMA_CONTROL.contains(&c)
                || (c.starts_with("<unused") || c.starts_with("<|")) && c.ends_with('>')
        };
        let control = added
            .iter()
            .filter(|(_, t)| is_control(&t.content))
            .map(|(&id, _)| id)
            .collect();
        let mut ordinary: Vec<(u32, tokenizers::AddedToken)> = added
            .into_iter()
            .filter(|(_, t)| !t.special)
            .map(|(id, mut t)| {
                t.special = true;
                (id, t)
            })
            .collect();
        ordinary.sort_by_key(|(id, _)| *id);
        let tokens: Vec<_> = ordinary.into_iter().map(|(_, t)| t).collect();
        inner
            .add_special_tokens(tokens)
            .map_err(|e| GuardError::Tokenizer(e.to_string()))?;
        inner.set_encode_special_tokens(true);
        Ok(Self { inner, control })
    }

    /// Content ids of already-normalised text: no BOS, no control tokens.
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

    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// The bytes one id stands for: `<0xNN>` byte-fallback pieces are one raw byte, `▁` is a space, control ids
    /// are nothing (what the tokenizer's decoder does, one token at a time).
    pub fn piece_bytes(&self, id: u32) -> Vec<u8> {
        if self.control.contains(&id) {
            return Vec::new();
        }
        let Some(piece) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
            if hex.len() == 2 {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    return vec![b];
                }
            }
        }
        piece.replace('\u{2581}', " ").into_bytes()
    }

    /// Whole-sequence decode through the tokenizer's own decoder (control ids dropped): what `TextStream` must
    /// reproduce piece by piece.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|i| !self.control.contains(i))
            .collect();
        self.inner
            .decode(&ids, false)
            .map_err(|e| GuardError::Tokenizer(e.to_string()))
    }
}

/// Turns generated ids into text as it streams: byte-fallback tokens can split a character across ids, so only
/// complete UTF-8 characters are released; `finish` flushes a dangling tail as U+FFFD.
#[derive(Default)]
pub struct TextStream {
    pending: Vec<u8>,
}

impl TextStream {
    /// Text completed by `id` (may be empty).
    pub fn push(&mut self, tok: &GemmaTokenizer, id: u32) -> String {
        self.pending.extend(tok.piece_bytes(id));
        let mut out = String::new();
        let mut cut = 0;
        loop {
            match std::str::from_utf8(&self.pending[cut..]) {
                Ok(s) => {
                    out.push_str(s);
                    cut = self.pending.len();
                    break;
                }
                Err(e) => {
                    let ok = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[cut..cut + ok]).unwrap_or_default(),
                    );
                    cut += ok;
                    match e.error_len() {
                        None => break, // incomplete character at the end: wait for its next bytes
                        Some(n) => {
                            out.push('\u{FFFD}');
                            cut += n;
                        }
                    }
                }
            }
        }
        self.pending.drain(..cut);
        out
    }

    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
