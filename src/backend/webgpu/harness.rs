//! Run one kernel on host data (fresh buffers, one dispatch, one readback): the per-kernel tests compare each of
//! the classifier's kernels and the guardian decoder's (RMSNorm, RoPE, GQA, GeGLU) with a CPU reference.

use super::device::{failed, Gpu};
use super::kernels::{self, Kernel, Params, Pipelines, MAX_HEAD_DIM};
use super::weights::{f32_bytes, repack_q8_0, rope_table, storage};
use super::{embedding_format, seq_info};
use crate::error::{GuardError, Result};
use crate::model::guardian::Rope;
use candle_core::quantized::GgmlDType;

pub struct KernelHarness {
    gpu: Gpu,
    pipelines: Pipelines,
}

/// Where a decoder buffer's heads live: for token t < `tokens` and head h < `heads`, `head_dim` values at
/// `base + t * stride + h * head_dim` (q/k/v columns of a fused row, or plain q rows with stride heads * head_dim).
#[derive(Clone, Copy, Debug)]
pub struct HeadRows {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub stride: usize,
    pub base: usize,
}

impl HeadRows {
    fn check(&self, len: usize) -> Result<()> {
        let end =
            self.base + self.tokens.saturating_sub(1) * self.stride + self.heads * self.head_dim;
        if self.tokens == 0 || end > len || self.heads * self.head_dim > self.stride {
            return Err(GuardError::Input(format!(
                "{self:?} does not fit a buffer of {len}"
            )));
        }
        Ok(())
    }
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl KernelHarness {
    pub async fn new() -> Result<Self> {
        let gpu = Gpu::new().await?;
        let pipelines = Pipelines::new(&gpu);
        Ok(Self { gpu, pipelines })
    }

    pub fn adapter_name(&self) -> String {
        self.gpu.info.name.clone()
    }

    /// One dispatch of `k` over `inputs` (binding order); `inputs[rw]` is written and read back.
    async fn run(
        &self,
        k: Kernel,
        params: Params,
        inputs: &[&[u8]],
        rw: usize,
        groups: (u32, u32),
    ) -> Result<Vec<f32>> {
        let gpu = &self.gpu;
        let out_len = inputs[rw].len() as u64;
        let (readback, check) = gpu.scoped(|| {
            let uniform = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: kernels::PARAMS_STRIDE,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.queue
                .write_buffer(&uniform, 0, &kernels::params_bytes(&[params]));
            let bufs: Vec<wgpu::Buffer> = inputs
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let buf = storage(gpu, "input", b);
                    if i != rw {
                        return buf;
                    }
                    // the output also needs COPY_SRC
                    let out = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("output"),
                        size: buf.size(),
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_SRC
                            | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    gpu.queue.write_buffer(&out, 0, &padded(b));
                    out
                })
                .collect();
            let refs: Vec<&wgpu::Buffer> = bufs.iter().collect();
            let bind = self.pipelines.bind_group(gpu, k, &uniform, 0, &refs);
            let readback = gpu.readback_buffer("readback", bufs[rw].size());
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                kernels::dispatch(&mut pass, self.pipelines.get(k), &bind, groups);
            }
            enc.copy_buffer_to_buffer(&bufs[rw], 0, &readback, 0, readback.size());
            gpu.queue.submit([enc.finish()]);
            readback
        });
        let read = gpu.read_f32(&readback).await;
        check.await?;
        let mut out = read?;
        out.truncate(out_len as usize / 4);
        Ok(out)
    }

    /// `x` (m x k) times the transpose of an `n x k` matrix in Q8_0 blocks, plus `bias`, optionally GELU(erf).
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's inputs one to one
    pub async fn matmul_q8_0(
        &self,
        x: &[f32],
        m: usize,
        blocks: &[u8],
        n: usize,
        k: usize,
        bias: &[f32],
        gelu: bool,
    ) -> Result<Vec<f32>> {
        let (values, mut aux) =
            repack_q8_0(blocks, n, k).ok_or_else(|| failed("Q8_0 blocks do not match n x k"))?;
        aux.extend_from_slice(bias);
        let params = [
            m as u32,
            n as u32,
            k as u32,
            gelu as u32,
            (n * k / 32) as u32,
            0,
            0,
            0,
        ];
        let out = vec![0f32; m * n];
        self.run(
            Kernel::MatmulQ8,
            params,
            &[&f32_bytes(x), &values, &f32_bytes(&aux), &f32_bytes(&out)],
            3,
            Kernel::MatmulQ8.groups(m as u32, n as u32),
        )
        .await
    }

    /// `x` (m x k) times the transpose of an unquantized `n x k` matrix, plus `bias`, optionally GELU(erf).
    #[allow(clippy::too_many_arguments)]
    pub async fn matmul_dense(
        &self,
        x: &[f32],
        m: usize,
        w: &[f32],
        n: usize,
        k: usize,
        bias: &[f32],
        gelu: bool,
    ) -> Result<Vec<f32>> {
        let params = [m as u32, n as u32, k as u32, gelu as u32, 0, 1, 0, 0];
        let out = vec![0f32; m * n];
        self.run(
            Kernel::MatmulQ8,
            params,
            &[
                &f32_bytes(x),
                &f32_bytes(w),
                &f32_bytes(bias),
                &f32_bytes(&out),
            ],
            3,
            Kernel::MatmulQ8.groups(m as u32, n as u32),
        )
        .await
    }

    /// Rows of `x` (width `h`) <- LayerNorm(row + residual row) * w + b.
    pub async fn layer_norm(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        w: &[f32],
        b: &[f32],
        eps: f32,
        h: usize,
    ) -> Result<Vec<f32>> {
        let rows = (x.len() / h) as u32;
        let norm: Vec<f32> = w.iter().chain(b).copied().collect();
        let res = residual.map_or_else(|| vec![0u8; 4], f32_bytes);
        let params = [
            rows,
            h as u32,
            residual.is_some() as u32,
            eps.to_bits(),
            0,
            h as u32,
            0,
            0,
        ];
        self.run(
            Kernel::LayerNorm,
            params,
            &[&f32_bytes(x), &res, &f32_bytes(&norm)],
            0,
            Kernel::LayerNorm.groups(rows, 0),
        )
        .await
    }

    /// Attention of every token over its own sequence; `qkv` rows are `[q | k | v]`, each `heads * head_dim` wide.
    pub async fn attention(
        &self,
        qkv: &[f32],
        lens: &[usize],
        heads: usize,
        head_dim: usize,
    ) -> Result<Vec<f32>> {
        let tokens: usize = lens.iter().sum();
        let h = heads * head_dim;
        let batch: Vec<Vec<u32>> = lens.iter().map(|&l| vec![0; l]).collect();
        let scale = 1.0 / (head_dim as f32).sqrt();
        let params = [
            tokens as u32,
            heads as u32,
            head_dim as u32,
            h as u32,
            3 * h as u32,
            lens.len() as u32,
            scale.to_bits(),
            0,
        ];
        let out = vec![0f32; tokens * h];
        self.run(
            Kernel::Attention,
            params,
            &[
                &u32_bytes(&seq_info(&batch)),
                &f32_bytes(qkv),
                &f32_bytes(&out),
            ],
            2,
            Kernel::Attention.groups((tokens * heads) as u32, 0),
        )
        .await
    }

    /// word[id] (decoded from `word`, a `dtype` table of width `h`) + position[pos] + token_type, per token.
    pub async fn embed(
        &self,
        batch: &[Vec<u32>],
        word: &[u8],
        dtype: GgmlDType,
        h: usize,
        position: &[f32],
        token_type: &[f32],
    ) -> Result<Vec<f32>> {
        let fmt = embedding_format(dtype)
            .ok_or_else(|| GuardError::Weights(format!("{dtype:?} embedding")))?;
        let tokens: usize = batch.iter().map(Vec::len).sum();
        let tables: Vec<f32> = position.iter().chain(token_type).copied().collect();
        let params = [
            tokens as u32,
            h as u32,
            fmt,
            batch.len() as u32,
            0,
            position.len() as u32,
            0,
            0,
        ];
        let out = vec![0f32; tokens * h];
        self.run(
            Kernel::Embed,
            params,
            &[
                &u32_bytes(&seq_info(batch)),
                word,
                &f32_bytes(&tables),
                &f32_bytes(&out),
            ],
            3,
            Kernel::Embed.groups((tokens * h) as u32, 0),
        )
        .await
    }

    /// Mean of `x`'s rows (width `h`) over each sequence.
    pub async fn pool(&self, x: &[f32], lens: &[usize], h: usize) -> Result<Vec<f32>> {
        let batch: Vec<Vec<u32>> = lens.iter().map(|&l| vec![0; l]).collect();
        let params = [lens.len() as u32, h as u32, 0, 0, 0, 0, 0, 0];
        let out = vec![0f32; lens.len() * h];
        self.run(
            Kernel::Pool,
            params,
            &[
                &u32_bytes(&seq_info(&batch)),
                &f32_bytes(x),
                &f32_bytes(&out),
            ],
            2,
            Kernel::Pool.groups((lens.len() * h) as u32, 0),
        )
        .await
    }

    /// Gemma's RMSNorm of `x`'s rows (width `w.len()`, `w` already holding the `+1`): norm(x) * w, or with a
    /// residual, residual + norm(x) * w (the sandwich post-norms).
    pub async fn rms_norm(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        w: &[f32],
        eps: f32,
    ) -> Result<Vec<f32>> {
        let width = w.len();
        let rows = (x.len() / width) as u32;
        let out = residual.map_or_else(|| vec![0f32; x.len()], <[f32]>::to_vec);
        let params = [
            rows,
            width as u32,
            residual.is_some() as u32,
            eps.to_bits(),
            0,
            1,
            width as u32,
            0,
        ];
        self.run(
            Kernel::RmsNorm,
            params,
            &[&f32_bytes(x), &f32_bytes(&out), &f32_bytes(w)],
            1,
            Kernel::RmsNorm.groups(rows, 0),
        )
        .await
    }

    /// RMSNorm in place on every head slice `rows` names (the q/k norms, `w` of length head_dim); returns all of
    /// `buf`, the rest unchanged.
    pub async fn rms_norm_heads(
        &self,
        buf: &[f32],
        rows: HeadRows,
        w: &[f32],
        eps: f32,
    ) -> Result<Vec<f32>> {
        rows.check(buf.len())?;
        let n = (rows.tokens * rows.heads) as u32;
        let params = [
            n,
            rows.head_dim as u32,
            2,
            eps.to_bits(),
            0,
            rows.heads as u32,
            rows.stride as u32,
            rows.base as u32,
        ];
        // mode 2 reads `out` only; the x slot takes any other buffer
        self.run(
            Kernel::RmsNorm,
            params,
            &[&[0u8; 4], &f32_bytes(buf), &f32_bytes(w)],
            1,
            Kernel::RmsNorm.groups(n, 0),
        )
        .await
    }

    /// RoPE in place on every head slice `rows` names, token t at position pos0 + t, with `rope`'s cos/sin tables
    /// (those of the CPU model); returns all of `buf`.
    pub async fn rope(
        &self,
        buf: &[f32],
        rows: HeadRows,
        pos0: usize,
        rope: &Rope,
    ) -> Result<Vec<f32>> {
        rows.check(buf.len())?;
        let half = rows.head_dim / 2;
        let table = rope_table(rope);
        let sin_off = table.len() / 2;
        if half == 0
            || rows.head_dim % 2 != 0
            || sin_off % half != 0
            || pos0 + rows.tokens > sin_off / half
        {
            return Err(GuardError::Input(format!(
                "positions {pos0}.. of {rows:?} outside a table of {sin_off} cos values"
            )));
        }
        let params = [
            rows.tokens as u32,
            rows.heads as u32,
            rows.head_dim as u32,
            rows.stride as u32,
            rows.base as u32,
            pos0 as u32,
            sin_off as u32,
            0,
        ];
        self.run(
            Kernel::Rope,
            params,
            &[&f32_bytes(buf), &f32_bytes(&table)],
            0,
            Kernel::Rope.groups((rows.tokens * rows.heads * half) as u32, 0),
        )
        .await
    }

    /// Causal grouped-query attention: `m` query rows of `q` (row length `q_stride`, heads at columns 0..) at
    /// positions pos0.. against `kv`, one `[k | v]` row (2 x kv_heads x head_dim) per position 0..pos0 + m;
    /// `window`: the last `window` positions (local layers) or, `None`, all (global). Returns m x heads x head_dim.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel's inputs one to one
    pub async fn attention_gqa(
        &self,
        q: &[f32],
        m: usize,
        q_stride: usize,
        kv: &[f32],
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        pos0: usize,
        window: Option<usize>,
    ) -> Result<Vec<f32>> {
        if m == 0
            || kv_heads == 0
            || heads % kv_heads != 0
            || head_dim > MAX_HEAD_DIM
            || window == Some(0)
            || q.len() < (m - 1) * q_stride + heads * head_dim
            || kv.len() < (pos0 + m) * 2 * kv_heads * head_dim
        {
            return Err(GuardError::Input(format!(
                "attention_gqa: inconsistent shapes (m {m}, heads {heads}/{kv_heads} x {head_dim}, pos0 {pos0})"
            )));
        }
        let scale = 1.0 / (head_dim as f32).sqrt();
        let params = [
            m as u32,
            heads as u32,
            kv_heads as u32,
            head_dim as u32,
            pos0 as u32,
            window.unwrap_or(0) as u32,
            scale.to_bits(),
            q_stride as u32,
        ];
        let out = vec![0f32; m * heads * head_dim];
        self.run(
            Kernel::AttentionGqa,
            params,
            &[&f32_bytes(q), &f32_bytes(kv), &f32_bytes(&out)],
            2,
            Kernel::AttentionGqa.groups((m * heads) as u32, 0),
        )
        .await
    }

    /// gelu_tanh(gate) * up over rows of `width`, with gate and up fused into one `[gate | up]` row as a single
    /// gate+up matmul would write them.
    pub async fn geglu(&self, gate: &[f32], up: &[f32], width: usize) -> Result<Vec<f32>> {
        let rows = gate.len() / width;
        let x: Vec<f32> = gate
            .chunks_exact(width)
            .zip(up.chunks_exact(width))
            .flat_map(|(g, u)| g.iter().chain(u).copied())
            .collect();
        let params = [
            rows as u32,
            width as u32,
            2 * width as u32,
            width as u32,
            0,
            0,
            0,
            0,
        ];
        let out = vec![0f32; rows * width];
        self.run(
            Kernel::Geglu,
            params,
            &[&f32_bytes(&x), &f32_bytes(&out)],
            1,
            Kernel::Geglu.groups((rows * width) as u32, 0),
        )
        .await
    }
}

fn padded(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(b.len().max(4).next_multiple_of(4), 0);
    v
}
