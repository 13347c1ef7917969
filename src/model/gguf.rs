//! Read a GGUF file held in memory (same code path in the browser, edge workers and natively) with candle's
//! parser, and hand out tensors by name with clear errors.

use std::io::Cursor;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{GuardError, Result};

pub struct GgufWeights<'a> {
    content: gguf_file::Content,
    reader: Cursor<&'a [u8]>,
}

impl<'a> GgufWeights<'a> {
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self> {
        let mut reader = Cursor::new(bytes);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| GuardError::Weights(format!("not a readable GGUF file: {e}")))?;
        Ok(Self { content, reader })
    }

    /// The stored bytes of a tensor, without copying (its type, and a shape check like `tensor`).
    pub fn raw(&self, name: &str, shape: &[usize]) -> Result<(GgmlDType, &'a [u8])> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| GuardError::Weights(format!("tensor `{name}` is missing")))?;
        if info.shape.dims() != shape {
            return Err(GuardError::Weights(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                info.shape.dims()
            )));
        }
        let n = info.shape.elem_count();
        let dt = info.ggml_dtype;
        let size = n / dt.block_size() * dt.type_size();
        let bytes: &'a [u8] = self.reader.get_ref();
        let start = (self.content.tensor_data_offset + info.offset) as usize;
        bytes
            .get(start..start + size)
            .map(|b| (dt, b))
            .ok_or_else(|| {
                GuardError::Weights(format!("tensor `{name}` runs past the end of the file"))
            })
    }

    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let t = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| GuardError::Weights(format!("tensor `{name}`: {e}")))?;
        if t.shape().dims() != shape {
            return Err(GuardError::Weights(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                t.shape().dims()
            )));
        }
        Ok(t)
    }

    /// A tensor's shape (candle order: rows first), without reading it.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| i.shape.dims().to_vec())
            .ok_or_else(|| GuardError::Weights(format!("tensor `{name}` is missing")))
    }

    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok().cloned())
            .ok_or_else(|| GuardError::Weights(format!("metadata `{key}` missing or not a string")))
    }

    /// An optional u32 key: `default` when absent, an error when present with another type.
    pub fn u32_or(&self, key: &str, default: u32) -> Result<u32> {
        if self.has(key) {
            self.u32(key)
        } else {
            Ok(default)
        }
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        if self.has(key) {
            self.f32(key)
        } else {
            Ok(default)
        }
    }

    pub fn u32(&self, key: &str) -> Result<u32> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| GuardError::Weights(format!("metadata `{key}` missing or not a u32")))
    }

    pub fn f32(&self, key: &str) -> Result<f32> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_f32().ok())
            .ok_or_else(|| GuardError::Weights(format!("metadata `{key}` missing or not an f32")))
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let bad = || GuardError::Weights(format!("metadata `{key}` missing or not a string array"));
        let v = self
            .content
            .metadata
            .get(key)
            .ok_or_else(bad)?
            .to_vec()
            .map_err(|_| bad())?;
        v.iter()
            .map(|s| s.to_string().cloned().map_err(|_| bad()))
            .collect()
    }
}
