//! A stand-in for a shipped model file, for timing it where the file cannot go: the same GGUF header (metadata,
//! every tensor's name, shape, format and offset) and seeded random tensor data in the same formats. No kernel's
//! work depends on the weights' values, so a stand-in takes the shipped model's time. The device tool's GPU machine
//! takes 64 MiB per call and the guardian's model.gguf is 130 MB (bench/device-run.sh); its header is ~15 KB.
//! Shared by benches/guardian_backends.rs and tests/bench_stand_in.rs.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType};
use slm_guard::ModelFiles;

/// The header of a GGUF file: everything before its tensor data.
pub fn layout(gguf: &[u8]) -> candle_core::Result<&[u8]> {
    let content = gguf_file::Content::read(&mut std::io::Cursor::new(gguf))?;
    Ok(&gguf[..content.tensor_data_offset as usize])
}

/// A model file with `layout`'s header and seeded random tensor data: Q8_0 with one scale for every block (so
/// every row is row-scaled, as our int8 kernels need) and F32 near 1 (the shipped F32 tensors are norm weights).
/// Deterministic.
pub fn weights(layout: &[u8]) -> candle_core::Result<Vec<u8>> {
    let content = gguf_file::Content::read(&mut std::io::Cursor::new(layout))?;
    let start = content.tensor_data_offset as usize;
    let size = |i: &gguf_file::TensorInfo| {
        i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()
    };
    let end = content
        .tensor_infos
        .values()
        .map(|i| start + i.offset as usize + size(i))
        .max()
        .unwrap_or(start);
    let mut out = vec![0u8; end];
    out[..start].copy_from_slice(&layout[..start]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*: fast, seeded, and good enough to keep every int8 value in play
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut names: Vec<_> = content.tensor_infos.keys().cloned().collect();
    names.sort(); // HashMap order is random: keep the file deterministic
    for name in names {
        let info = &content.tensor_infos[&name];
        let data = &mut out[start + info.offset as usize..][..size(info)];
        match info.ggml_dtype {
            GgmlDType::Q8_0 => {
                // int8 values in [-127, 127] at scale 1.6e-4: weights of about +-0.02, like the trained ones
                let scale = half::f16::from_f32(1.6e-4).to_le_bytes();
                for block in data.chunks_exact_mut(34) {
                    block[..2].copy_from_slice(&scale);
                    for q in &mut block[2..] {
                        *q = ((next() % 255) as i16 - 127) as i8 as u8;
                    }
                }
            }
            GgmlDType::F32 => {
                for v in data.chunks_exact_mut(4) {
                    let noise = (next() % 1000) as f32 / 1000.0 - 0.5;
                    v.copy_from_slice(&(1.0 + 0.02 * noise).to_le_bytes());
                }
            }
            other => candle_core::bail!("{name}: no stand-in for {other:?} (only Q8_0 and F32)"),
        }
    }
    Ok(out)
}

/// The stand-in for `layout` as loadable model files: `dir`'s tokenizer, and `dir`'s manifest naming the
/// stand-in's sha256 and size (the loader checks both). `dir` needs no model.gguf.
pub fn model_files(dir: &Path, layout: &[u8]) -> ModelFiles {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (tokenizer.json: python3 training/common/packed.py expand DIR)",
                dir.join(name).display()
            )
        })
    };
    let weights = weights(layout).expect("a GGUF header with Q8_0 and F32 tensors");
    let mut manifest: serde_json::Value = serde_json::from_slice(&read("manifest.json")).unwrap();
    manifest["files"]["model.gguf"] = serde_json::json!({
        "sha256": slm_guard::manifest::sha256_hex(&weights),
        "bytes": weights.len(),
    });
    ModelFiles {
        manifest: serde_json::to_vec(&manifest).unwrap(),
        weights,
        tokenizer: read("tokenizer.json"),
    }
}
