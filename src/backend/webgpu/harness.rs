//! Run one kernel on host data (fresh buffers, one dispatch, one readback): the per-kernel tests compare these
//! against CPU references, and a new kernel (for the guardian decoder) can be checked the same way.

use super::device::{failed, Gpu};
use super::kernels::{self, Kernel, Params, Pipelines};
use super::weights::{f32_bytes, repack_q8_0, storage};
use super::{embedding_format, seq_info};
use crate::error::{GuardError, Result};
use candle_core::quantized::GgmlDType;

pub struct KernelHarness {
    gpu: Gpu,
    pipelines: Pipelines,
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
            let readback = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bufs[rw].size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
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
}

fn padded(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(b.len().max(4).next_multiple_of(4), 0);
    v
}
