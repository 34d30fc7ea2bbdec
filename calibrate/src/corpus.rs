//! The calibration tokens: the user's text files (each tokenized with the
//! model's BOS, concatenated), then self-generated sequences when more
//! tokens are wanted. The text is evaluated in whole chunks of the context
//! size; generation adds what the chunks asked for lack.

use crate::error::{Error, Result};
use crate::ffi::Token;
use crate::llama::Vocab;
use std::path::PathBuf;

/// The text part and how many chunks to evaluate.
pub struct Plan {
    pub text: Vec<Token>,
    pub chunks: usize,
}

impl Plan {
    /// `tokens`: the requested count (None: all of the text, or 10000 with
    /// no text).
    pub fn new(vocab: Vocab, files: &[PathBuf], tokens: Option<usize>, ctx: usize) -> Result<Plan> {
        let mut text = Vec::new();
        for f in files {
            let bytes = std::fs::read(f).map_err(|e| Error::Io(f.clone(), e))?;
            let s = String::from_utf8_lossy(&bytes);
            text.extend(vocab.tokenize(&s, &f.display().to_string())?);
        }
        let chunks = match (files.is_empty(), tokens) {
            (true, t) => t.unwrap_or(10_000).div_ceil(ctx),
            (false, None) => text.len() / ctx,
            (false, Some(t)) => t.div_ceil(ctx),
        };
        if chunks == 0 {
            return Err(Error::Usage(format!(
                "the text has {} tokens, fewer than one chunk of {ctx} (--ctx-size); add --tokens N to fill up with self-generated text",
                text.len()
            )));
        }
        text.truncate(chunks * ctx);
        Ok(Plan { text, chunks })
    }
}
