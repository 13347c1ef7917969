//! The guardian decoder (model/guardian.rs: Gemma 3 270M) on WebGPU, computing the CPU `GuardianModel`'s function
//! with the decoder kernels (RMSNorm, RoPE, grouped-query attention, GeGLU) and the Q8_0 matmul. Every matrix must
//! be Q8_0 and stays 8-bit on the GPU; the tied embedding is uploaded once, in the matmul's layout, and serves both
//! the gather (`embed.wgsl` format 4) and the head. Activations are f32 (the CPU rounds them to int16 inside its
//! matmuls).
//!
//! A prompt runs in chunks of up to `PREFILL_CHUNK` tokens: one submission per chunk with all its layers, and one
//! readback per call (the last position's hidden row after the output norm). The KV cache (`GpuCache`) is one
//! buffer per layer with one `[k | v]` row per position; the k|v matmul writes the new rows in place and k-norm and
//! RoPE run on them there. Local layers mask by position (`attention_gqa.wgsl`) instead of keeping the CPU's ring,
//! so every layer keeps every position; the buffers grow by doubling, up to `max_context` positions.
//! `logits` runs the tied head on the GPU: one more small submission per generated token, but 44k x 640 int8
//! weights already on the device instead of a second copy of the table in CPU memory.

use std::sync::Mutex;

use candle_core::quantized::GgmlDType;

use super::device::{failed, unavailable, Gpu};
use super::kernels::{self, Kernel, Params, Pipelines, MAX_HEAD_DIM, PARAMS_STRIDE};
use super::seq_info;
use super::weights::{dense, f32_bytes, rope_table, storage, LinearWeight, QLinear};
use crate::error::{GuardError, Result};
use crate::model::guardian::{Config, Rope};
use crate::model::GgufWeights;

/// Prompt tokens per submission; the activation buffers are sized for it once.
const PREFILL_CHUNK: usize = 128;
/// Positions a cache gets on first use (it doubles from there): a short message's classify prompt fits.
const MIN_CACHE_POSITIONS: usize = 64;
/// `embed.wgsl` format of the tied embedding as the matmul stores it.
const EMBED_REPACKED_Q8_0: u32 = 4;
/// `rmsnorm.wgsl` modes.
const NORM: u32 = 0;
const NORM_ADD: u32 = 1;
const NORM_IN_PLACE: u32 = 2;
/// Linears per layer in `Slot::W`/`Slot::Aux` numbering: q, k|v, o, gate|up, down; the embedding comes after.
const LINEARS_PER_LAYER: usize = 5;

pub struct WebGpuDecoder {
    gpu: Gpu,
    config: Config,
    pipelines: Pipelines,
    weights: Weights,
    acts: Activations,
    head: Head,
    /// Held from writing a submission's uniforms to submitting it: concurrent calls would otherwise swap them.
    submit: Mutex<()>,
}

/// One sequence's state on the GPU. It belongs to the decoder that made it (its bind groups name that decoder's
/// buffers).
pub struct GpuCache {
    /// per layer, `capacity` rows of `[k | v]` (2 x kv_heads x head_dim), RoPE'd and normed
    kv: Vec<wgpu::Buffer>,
    binds: Vec<wgpu::BindGroup>,
    capacity: usize,
    pos: usize,
}

impl GpuCache {
    /// Positions (tokens) this cache holds.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

struct Layer {
    q: QLinear,
    kv: QLinear,
    o: QLinear,
    gate_up: QLinear,
    down: QLinear,
    /// offsets in `Weights::norms`
    attn_norm: u32,
    q_norm: u32,
    k_norm: u32,
    post_attention_norm: u32,
    ffn_norm: u32,
    post_ffw_norm: u32,
}

struct Weights {
    layers: Vec<Layer>,
    /// the tied embedding / head (vocab x hidden, zero bias)
    embed: QLinear,
    /// every RMSNorm weight, f32
    norms: wgpu::Buffer,
    output_norm: u32,
    /// the CPU's cos | sin tables (`rope_table`), and where sin starts in each
    rope_local: wgpu::Buffer,
    rope_global: wgpu::Buffer,
    sin_off: u32,
}

/// Activations of one chunk (at most `PREFILL_CHUNK` tokens), allocated once.
struct Activations {
    params: wgpu::Buffer,
    info: wgpu::Buffer,
    /// the residual stream
    x: wgpu::Buffer,
    /// a pre-norm's output (and, at the end, the output norm's)
    normed: wgpu::Buffer,
    q: wgpu::Buffer,
    ctx: wgpu::Buffer,
    /// an attention or FFN branch before its post-norm
    branch: wgpu::Buffer,
    gate_up: wgpu::Buffer,
    act: wgpu::Buffer,
}

/// The head's own buffers (one hidden row in, vocab logits out) and its one dispatch.
struct Head {
    hidden: wgpu::Buffer,
    logits: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

/// A buffer an op binds.
#[derive(Clone, Copy)]
enum Slot {
    Info,
    X,
    Normed,
    Q,
    Ctx,
    Branch,
    GateUp,
    Act,
    Norms,
    /// global (true) or local RoPE table
    Rope(bool),
    /// KV cache of layer `l`
    Kv(usize),
    /// int8 values / scales + bias of linear `i`
    W(usize),
    Aux(usize),
}

struct Op {
    kernel: Kernel,
    params: Params,
    groups: (u32, u32),
    bufs: Vec<Slot>,
}

fn weights_error(why: String) -> GuardError {
    GuardError::Weights(format!("webgpu decoder: {why}"))
}

/// Matrices with a common `k` stacked along n (k and v, gate and up) as one Q8_0 linear with a zero bias (Gemma's
/// linears have none). Any other format is refused: the matmul kernel reads Q8_0 blocks only.
fn q8_linear(gpu: &Gpu, w: &GgufWeights, parts: &[(&str, usize)], k: usize) -> Result<QLinear> {
    let mut stacked = Vec::with_capacity(parts.len());
    for &(name, n) in parts {
        match w.raw(name, &[n, k])? {
            (GgmlDType::Q8_0, blocks) => {
                stacked.push((LinearWeight::Q8_0(blocks), n, vec![0.0; n]))
            }
            (dtype, _) => {
                return Err(weights_error(format!(
                    "`{name}` is {dtype:?}; it runs Q8_0 matrices only (use the CPU backend)"
                )))
            }
        }
    }
    QLinear::upload(gpu, parts[0].0, &stacked, k)
}

impl Weights {
    fn upload(gpu: &Gpu, w: &mut GgufWeights, c: &Config) -> Result<Self> {
        let (h, d) = (c.hidden, c.head_dim);
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let mut norms = Vec::new();
        let mut norm = |w: &mut GgufWeights, name: &str, len: usize| -> Result<u32> {
            let off = norms.len() as u32;
            norms.extend(dense(w, name, &[len])?);
            Ok(off)
        };
        let mut layers = Vec::with_capacity(c.layers);
        for i in 0..c.layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                q: q8_linear(gpu, w, &[(&p("attn_q"), qd)], h)?,
                kv: q8_linear(gpu, w, &[(&p("attn_k"), kvd), (&p("attn_v"), kvd)], h)?,
                o: q8_linear(gpu, w, &[(&p("attn_output"), h)], qd)?,
                gate_up: q8_linear(gpu, w, &[(&p("ffn_gate"), c.ffn), (&p("ffn_up"), c.ffn)], h)?,
                down: q8_linear(gpu, w, &[(&p("ffn_down"), h)], c.ffn)?,
                attn_norm: norm(w, &p("attn_norm"), h)?,
                q_norm: norm(w, &p("attn_q_norm"), d)?,
                k_norm: norm(w, &p("attn_k_norm"), d)?,
                post_attention_norm: norm(w, &p("post_attention_norm"), h)?,
                ffn_norm: norm(w, &p("ffn_norm"), h)?,
                post_ffw_norm: norm(w, &p("post_ffw_norm"), h)?,
            });
        }
        let output_norm = norm(w, "output_norm.weight", h)?;
        let embed = q8_linear(gpu, w, &[("token_embd.weight", c.vocab)], h)?;
        let rope = |base| {
            let table = rope_table(&Rope::new(base, d, c.max_context));
            storage(gpu, "rope", &f32_bytes(&table))
        };
        Ok(Self {
            layers,
            embed,
            norms: storage(gpu, "norms", &f32_bytes(&norms)),
            output_norm,
            rope_local: rope(c.rope_local_base),
            rope_global: rope(c.rope_global_base),
            sin_off: (c.max_context * d / 2) as u32,
        })
    }

    fn linear(&self, i: usize) -> &QLinear {
        match self.layers.get(i / LINEARS_PER_LAYER) {
            Some(l) => [&l.q, &l.kv, &l.o, &l.gate_up, &l.down][i % LINEARS_PER_LAYER],
            None => &self.embed,
        }
    }

    /// Every dispatch of one chunk of `m` tokens at positions pos0.., in order. The kernels and buffers depend on
    /// nothing but the model, so bind groups built from `plan(c, 1, 0)` serve every chunk.
    fn plan(&self, c: &Config, m: u32, pos0: u32) -> Vec<Op> {
        let (h, d, ffn) = (c.hidden as u32, c.head_dim as u32, c.ffn as u32);
        let (heads, kv_heads) = (c.heads as u32, c.kv_heads as u32);
        let (qd, kv_row) = (heads * d, 2 * kv_heads * d);
        let eps = c.rms_norm_eps.to_bits();
        let mut ops = Vec::new();
        let matmul = |ops: &mut Vec<Op>, i: usize, x: Slot, y: Slot, y_off: u32| {
            let l = self.linear(i);
            ops.push(Op {
                kernel: Kernel::MatmulQ8,
                params: [m, l.n, l.k, 0, l.bias_off(), 0, y_off, 0],
                groups: Kernel::MatmulQ8.groups(m, l.n),
                bufs: vec![x, Slot::W(i), Slot::Aux(i), y],
            });
        };
        // `rows` rows of `width` at base + t * stride + head * width (head < per_token)
        let rms = |ops: &mut Vec<Op>,
                   (x, out): (Slot, Slot),
                   mode: u32,
                   w_off: u32,
                   rows: u32,
                   [width, per_token, stride, base]: [u32; 4]| {
            ops.push(Op {
                kernel: Kernel::RmsNorm,
                params: [rows, width, mode, eps, w_off, per_token, stride, base],
                groups: Kernel::RmsNorm.groups(rows, 0),
                bufs: vec![x, out, Slot::Norms],
            });
        };
        let rope =
            |ops: &mut Vec<Op>, buf: Slot, global: bool, [per_token, stride, base]: [u32; 3]| {
                ops.push(Op {
                    kernel: Kernel::Rope,
                    params: [m, per_token, d, stride, base, pos0, self.sin_off, 0],
                    groups: Kernel::Rope.groups(m * per_token * d / 2, 0),
                    bufs: vec![buf, Slot::Rope(global)],
                });
            };
        let row = [h, 1, h, 0];
        let head = LINEARS_PER_LAYER * self.layers.len();
        ops.push(Op {
            kernel: Kernel::Embed,
            params: [
                m,
                h,
                EMBED_REPACKED_Q8_0,
                1,
                0,
                0,
                (h as f32).sqrt().to_bits(),
                0,
            ],
            groups: Kernel::Embed.groups(m * h, 0),
            bufs: vec![Slot::Info, Slot::W(head), Slot::Aux(head), Slot::X],
        });
        for (l, layer) in self.layers.iter().enumerate() {
            let i = LINEARS_PER_LAYER * l;
            let global = c.is_global(l);
            // this chunk's k|v rows, straight into the cache at their positions
            let new_kv = pos0 * kv_row;
            rms(
                &mut ops,
                (Slot::X, Slot::Normed),
                NORM,
                layer.attn_norm,
                m,
                row,
            );
            matmul(&mut ops, i, Slot::Normed, Slot::Q, 0);
            matmul(&mut ops, i + 1, Slot::Normed, Slot::Kv(l), new_kv);
            // in place: the x slot is not read, any buffer other than the written one fills it
            rms(
                &mut ops,
                (Slot::X, Slot::Q),
                NORM_IN_PLACE,
                layer.q_norm,
                m * heads,
                [d, heads, qd, 0],
            );
            rms(
                &mut ops,
                (Slot::X, Slot::Kv(l)),
                NORM_IN_PLACE,
                layer.k_norm,
                m * kv_heads,
                [d, kv_heads, kv_row, new_kv],
            );
            rope(&mut ops, Slot::Q, global, [heads, qd, 0]);
            rope(&mut ops, Slot::Kv(l), global, [kv_heads, kv_row, new_kv]);
            let window = if global { 0 } else { c.sliding_window as u32 };
            ops.push(Op {
                kernel: Kernel::AttentionGqa,
                // query_pre_attn_scalar = head_dim, as on the CPU
                params: [
                    m,
                    heads,
                    kv_heads,
                    d,
                    pos0,
                    window,
                    (1.0 / (d as f32).sqrt()).to_bits(),
                    qd,
                ],
                groups: Kernel::AttentionGqa.groups(m * heads, 0),
                bufs: vec![Slot::Q, Slot::Kv(l), Slot::Ctx],
            });
            matmul(&mut ops, i + 2, Slot::Ctx, Slot::Branch, 0);
            rms(
                &mut ops,
                (Slot::Branch, Slot::X),
                NORM_ADD,
                layer.post_attention_norm,
                m,
                row,
            );
            rms(
                &mut ops,
                (Slot::X, Slot::Normed),
                NORM,
                layer.ffn_norm,
                m,
                row,
            );
            matmul(&mut ops, i + 3, Slot::Normed, Slot::GateUp, 0);
            ops.push(Op {
                kernel: Kernel::Geglu,
                params: [m, ffn, 2 * ffn, ffn, 0, 0, 0, 0],
                groups: Kernel::Geglu.groups(m * ffn, 0),
                bufs: vec![Slot::GateUp, Slot::Act],
            });
            matmul(&mut ops, i + 4, Slot::Act, Slot::Branch, 0);
            rms(
                &mut ops,
                (Slot::Branch, Slot::X),
                NORM_ADD,
                layer.post_ffw_norm,
                m,
                row,
            );
        }
        // the output norm of the last row only: that is all a caller gets
        let last = [h, 1, h, (m.max(1) - 1) * h];
        rms(
            &mut ops,
            (Slot::X, Slot::Normed),
            NORM,
            self.output_norm,
            1,
            last,
        );
        ops
    }
}

impl Activations {
    fn new(gpu: &Gpu, c: &Config, ops: usize) -> Self {
        let buf = |label: &str, bytes: usize, usage: wgpu::BufferUsages| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes.max(16) as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        let st = wgpu::BufferUsages::STORAGE;
        let rows = |width: usize| PREFILL_CHUNK * width * 4;
        let qd = c.heads * c.head_dim;
        Self {
            params: buf(
                "decoder params",
                ops * PARAMS_STRIDE as usize,
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
            info: buf(
                "decoder seq_info",
                (2 + 2 * PREFILL_CHUNK) * 4,
                st | wgpu::BufferUsages::COPY_DST,
            ),
            x: buf("x", rows(c.hidden), st),
            normed: buf("normed", rows(c.hidden), st | wgpu::BufferUsages::COPY_SRC),
            q: buf("q", rows(qd), st),
            ctx: buf("ctx", rows(qd), st),
            branch: buf("branch", rows(c.hidden), st),
            gate_up: buf("gate_up", rows(2 * c.ffn), st),
            act: buf("act", rows(c.ffn), st),
        }
    }
}

impl Head {
    fn new(gpu: &Gpu, pipelines: &Pipelines, embed: &QLinear) -> Self {
        let buf = |label: &str, bytes: u64, usage: wgpu::BufferUsages| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        let params = buf(
            "head params",
            PARAMS_STRIDE,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let head: Params = [1, embed.n, embed.k, 0, embed.bias_off(), 0, 0, 0];
        gpu.queue
            .write_buffer(&params, 0, &kernels::params_bytes(&[head]));
        let hidden = buf(
            "head hidden",
            embed.k as u64 * 4,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let logits = buf(
            "logits",
            embed.n as u64 * 4,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let bind = pipelines.bind_group(
            gpu,
            Kernel::MatmulQ8,
            &params,
            0,
            &[&hidden, &embed.wq, &embed.aux, &logits],
        );
        Self {
            hidden,
            logits,
            bind,
        }
    }
}

impl WebGpuDecoder {
    /// Adapter and device, the config (read and checked by the CPU model's own reader), weight upload (every
    /// matrix Q8_0, else a `MODEL_WEIGHTS` error), RoPE tables for `max_context` positions (capped at the
    /// checkpoint's context) and pipelines.
    pub async fn new(weights_gguf: &[u8], max_context: usize) -> Result<Self> {
        Self::new_with(weights_gguf, max_context, true).await
    }

    /// As `new`; with `allow_software: false` a CPU-emulated adapter (llvmpipe, SwiftShader, WARP) is refused
    /// before the upload (as `WebGpuBackend::new_with`: always slower than the CPU path).
    pub async fn new_with(
        weights_gguf: &[u8],
        max_context: usize,
        allow_software: bool,
    ) -> Result<Self> {
        let gpu = Gpu::new().await?;
        if !allow_software && gpu.info.device_type == wgpu::DeviceType::Cpu {
            return Err(unavailable(format!(
                "adapter `{}` is a software renderer",
                gpu.name()
            )));
        }
        let mut w = GgufWeights::from_bytes(weights_gguf)?;
        let config = Config::from_gguf(&w, max_context)?;
        if config.head_dim > MAX_HEAD_DIM {
            return Err(weights_error(format!(
                "head size {} above {MAX_HEAD_DIM}",
                config.head_dim
            )));
        }
        let limit = gpu.device.limits().max_storage_buffer_binding_size;
        let table = (config.vocab * config.hidden) as u64;
        let cache = (config.max_context * 2 * config.kv_heads * config.head_dim * 4) as u64;
        if table > limit || cache > limit {
            return Err(unavailable(format!(
                "the embedding ({table} bytes) or a layer's KV cache ({cache} bytes) exceeds the device's \
                 storage binding limit of {limit}"
            )));
        }
        let (built, check) = gpu.scoped(|| -> Result<_> {
            let weights = Weights::upload(&gpu, &mut w, &config)?;
            let pipelines = Pipelines::new(&gpu);
            let acts = Activations::new(&gpu, &config, weights.plan(&config, 1, 0).len());
            let head = Head::new(&gpu, &pipelines, &weights.embed);
            Ok((weights, pipelines, acts, head))
        });
        check.await?;
        let (weights, pipelines, acts, head) = built?;
        Ok(Self {
            gpu,
            config,
            pipelines,
            weights,
            acts,
            head,
            submit: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// e.g. "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"; browsers hide the name: "unnamed (BrowserWebGpu)".
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.gpu.name(), self.gpu.info.backend)
    }

    /// Destroy the device, as a driver reset or a lost GPU would: for fault drills and the fallback tests.
    #[doc(hidden)]
    pub fn destroy_device(&self) {
        self.gpu.device.destroy();
    }

    /// True once the device was lost or reported an error outside our error scopes: use the CPU model from then on.
    pub fn is_lost(&self) -> bool {
        self.gpu.is_lost()
    }

    /// An empty cache for one sequence; GPU memory is taken on first use.
    pub fn new_cache(&self) -> GpuCache {
        GpuCache {
            kv: Vec::new(),
            binds: Vec::new(),
            capacity: 0,
            pos: 0,
        }
    }

    /// Run `ids` at the next positions of `cache`; returns the final-normed hidden state of the last one (as the
    /// CPU `GuardianModel::prefill`).
    pub async fn prefill(&self, cache: &mut GpuCache, ids: &[u32]) -> Result<Vec<f32>> {
        let c = &self.config;
        if ids.is_empty() {
            return Err(GuardError::Input("no tokens to run".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(GuardError::Input(format!(
                "token id {bad} outside the vocabulary"
            )));
        }
        let end = cache.pos + ids.len();
        if end > c.max_context {
            return Err(GuardError::Input(format!(
                "{end} positions exceed the context of {}",
                c.max_context
            )));
        }
        self.gpu.check_alive()?;
        let h = c.hidden;
        let row_bytes = (h * 4) as u64;
        let readback = self.gpu.readback_buffer("hidden readback", row_bytes);
        let (encoded, check) = self.gpu.scoped(|| -> Result<()> {
            let _turn = self
                .submit
                .lock()
                .map_err(|_| failed("decoder lock poisoned"))?;
            let chunks = ids.len().div_ceil(PREFILL_CHUNK);
            for (i, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
                let mut enc = self.gpu.device.create_command_encoder(&Default::default());
                if i == 0 {
                    self.reserve(cache, end, &mut enc);
                }
                let (m, pos0) = (chunk.len(), cache.pos + i * PREFILL_CHUNK);
                let ops = self.weights.plan(c, m as u32, pos0 as u32);
                let params: Vec<Params> = ops.iter().map(|o| o.params).collect();
                let info: Vec<u8> = seq_info(&[chunk.to_vec()])
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                self.gpu
                    .queue
                    .write_buffer(&self.acts.params, 0, &kernels::params_bytes(&params));
                self.gpu.queue.write_buffer(&self.acts.info, 0, &info);
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    for (op, bind) in ops.iter().zip(&cache.binds) {
                        kernels::dispatch(
                            &mut pass,
                            self.pipelines.get(op.kernel),
                            bind,
                            op.groups,
                        );
                    }
                }
                if i + 1 == chunks {
                    let at = ((m - 1) * h * 4) as u64;
                    enc.copy_buffer_to_buffer(&self.acts.normed, at, &readback, 0, row_bytes);
                }
                self.gpu.queue.submit([enc.finish()]);
            }
            Ok(())
        });
        let read = match encoded {
            Ok(()) => self.gpu.read_f32(&readback).await,
            Err(e) => Err(e),
        };
        check.await?;
        let hidden = read?;
        cache.pos = end;
        Ok(hidden)
    }

    /// One more token: `prefill` of a single id.
    pub async fn step(&self, cache: &mut GpuCache, id: u32) -> Result<Vec<f32>> {
        self.prefill(cache, &[id]).await
    }

    /// Logits over the whole vocabulary for one hidden row: the tied Q8_0 embedding times the f32 row, which is
    /// the CPU's `logits_for` over every id (its `logits` rounds the row to int16 first).
    pub async fn logits(&self, hidden: &[f32]) -> Result<Vec<f32>> {
        let c = &self.config;
        if hidden.len() != c.hidden {
            return Err(GuardError::Input(format!(
                "hidden row of {} values, the model's is {}",
                hidden.len(),
                c.hidden
            )));
        }
        self.gpu.check_alive()?;
        let out_bytes = (c.vocab * 4) as u64;
        let readback = self.gpu.readback_buffer("logits readback", out_bytes);
        let (encoded, check) = self.gpu.scoped(|| -> Result<()> {
            let _turn = self
                .submit
                .lock()
                .map_err(|_| failed("decoder lock poisoned"))?;
            self.gpu
                .queue
                .write_buffer(&self.head.hidden, 0, &f32_bytes(hidden));
            let mut enc = self.gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                kernels::dispatch(
                    &mut pass,
                    self.pipelines.get(Kernel::MatmulQ8),
                    &self.head.bind,
                    Kernel::MatmulQ8.groups(1, c.vocab as u32),
                );
            }
            enc.copy_buffer_to_buffer(&self.head.logits, 0, &readback, 0, out_bytes);
            self.gpu.queue.submit([enc.finish()]);
            Ok(())
        });
        let read = match encoded {
            Ok(()) => self.gpu.read_f32(&readback).await,
            Err(e) => Err(e),
        };
        check.await?;
        read
    }

    /// Make room in `cache` for `needed` positions: new per-layer buffers (doubling, at most `max_context`
    /// positions) with the rows so far copied over in `enc`, and bind groups naming them.
    fn reserve(&self, cache: &mut GpuCache, needed: usize, enc: &mut wgpu::CommandEncoder) {
        if needed <= cache.capacity {
            return;
        }
        let c = &self.config;
        let capacity = needed
            .max(2 * cache.capacity)
            .max(MIN_CACHE_POSITIONS)
            .min(c.max_context);
        let row = (2 * c.kv_heads * c.head_dim * 4) as u64;
        let kv: Vec<wgpu::Buffer> = (0..c.layers)
            .map(|l| {
                let b = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kv cache"),
                    size: capacity as u64 * row,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if cache.pos > 0 {
                    enc.copy_buffer_to_buffer(&cache.kv[l], 0, &b, 0, cache.pos as u64 * row);
                }
                b
            })
            .collect();
        cache.binds = self
            .weights
            .plan(c, 1, 0)
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let bufs: Vec<&wgpu::Buffer> =
                    op.bufs.iter().map(|&s| self.resolve(&kv, s)).collect();
                self.pipelines.bind_group(
                    &self.gpu,
                    op.kernel,
                    &self.acts.params,
                    i as u64 * PARAMS_STRIDE,
                    &bufs,
                )
            })
            .collect();
        cache.kv = kv;
        cache.capacity = capacity;
    }

    fn resolve<'a>(&'a self, kv: &'a [wgpu::Buffer], s: Slot) -> &'a wgpu::Buffer {
        let (a, w) = (&self.acts, &self.weights);
        match s {
            Slot::Info => &a.info,
            Slot::X => &a.x,
            Slot::Normed => &a.normed,
            Slot::Q => &a.q,
            Slot::Ctx => &a.ctx,
            Slot::Branch => &a.branch,
            Slot::GateUp => &a.gate_up,
            Slot::Act => &a.act,
            Slot::Norms => &w.norms,
            Slot::Rope(true) => &w.rope_global,
            Slot::Rope(false) => &w.rope_local,
            Slot::Kv(l) => &kv[l],
            Slot::W(i) => &w.linear(i).wq,
            Slot::Aux(i) => &w.linear(i).aux,
        }
    }
}
