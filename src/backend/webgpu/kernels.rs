//! The WGSL kernels, their pipelines (compiled once per device) and their launch geometry. Each kernel takes one
//! uniform block of eight 32-bit words at binding 0 and its storage buffers at bindings 1.. in the order of
//! `Kernel::bindings`.

use super::device::Gpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// word (GGUF-encoded) + position + type rows per token
    Embed,
    /// x <- LayerNorm(x [+ residual])
    LayerNorm,
    /// y = x W^T + b [GELU], W as int8 + per-block scales (or plain f32 for small unquantized weights)
    MatmulQ8,
    /// ragged scaled dot-product attention over a fused qkv buffer
    Attention,
    /// mean over each sequence's tokens
    Pool,
    /// decoder: out = RMSNorm(x), out += RMSNorm(x) or in place, on rows or per-head slices of rows
    RmsNorm,
    /// decoder: NeoX rotary embedding in place on q/k heads, from uploaded cos/sin tables
    Rope,
    /// decoder: causal grouped-query attention of new rows against a KV cache, optional sliding window
    AttentionGqa,
    /// decoder: out = gelu_tanh(gate) * up
    Geglu,
}

pub const ALL: [Kernel; 9] = [
    Kernel::Embed,
    Kernel::LayerNorm,
    Kernel::MatmulQ8,
    Kernel::Attention,
    Kernel::Pool,
    Kernel::RmsNorm,
    Kernel::Rope,
    Kernel::AttentionGqa,
    Kernel::Geglu,
];

/// Uniform block of every kernel (f32 fields are stored with `f32::to_bits`).
pub type Params = [u32; 8];

/// Uniform blocks live in one buffer, each at a multiple of the (core-limit) uniform offset alignment.
pub const PARAMS_STRIDE: u64 = 256;

/// Most workgroups per dispatch dimension under core limits; longer launches wrap into y.
const MAX_GROUPS: u32 = 65_535;

// matmul_q8.wgsl tile
pub const MATMUL_TM: u32 = 32;
pub const MATMUL_TN: u32 = 64;
/// attention.wgsl and attention_gqa.wgsl keep q and the output row of one head in shared memory
pub const MAX_HEAD_DIM: usize = 256;

impl Kernel {
    fn source(self) -> &'static str {
        match self {
            Kernel::Embed => include_str!("shaders/embed.wgsl"),
            Kernel::LayerNorm => include_str!("shaders/layernorm.wgsl"),
            Kernel::MatmulQ8 => include_str!("shaders/matmul_q8.wgsl"),
            Kernel::Attention => include_str!("shaders/attention.wgsl"),
            Kernel::Pool => include_str!("shaders/pool.wgsl"),
            Kernel::RmsNorm => include_str!("shaders/rmsnorm.wgsl"),
            Kernel::Rope => include_str!("shaders/rope.wgsl"),
            Kernel::AttentionGqa => include_str!("shaders/attention_gqa.wgsl"),
            Kernel::Geglu => include_str!("shaders/geglu.wgsl"),
        }
    }

    /// Storage bindings after the uniform block, in binding order (names for errors and docs).
    pub fn bindings(self) -> &'static [&'static str] {
        match self {
            Kernel::Embed => &["seq_info", "word", "tables", "out (rw)"],
            Kernel::LayerNorm => &["x (rw)", "residual", "norm"],
            Kernel::MatmulQ8 => &["x", "wq", "aux", "y (rw)"],
            Kernel::Attention => &["seq_info", "qkv", "ctx (rw)"],
            Kernel::Pool => &["seq_info", "x", "out (rw)"],
            Kernel::RmsNorm => &["x", "out (rw)", "norm"],
            Kernel::Rope => &["x (rw)", "tables"],
            Kernel::AttentionGqa => &["q", "kv", "ctx (rw)"],
            Kernel::Geglu => &["x", "out (rw)"],
        }
    }

    /// Workgroups for a launch over `work` items (elements, rows, (token, head) pairs, rotation pairs, or the
    /// matmul's m x n).
    pub fn groups(self, work: u32, n: u32) -> (u32, u32) {
        let wrap = |g: u32| {
            let x = g.clamp(1, MAX_GROUPS);
            (x, g.div_ceil(x).max(1))
        };
        match self {
            // one invocation per element (rope: per rotation pair), 64 per workgroup
            Kernel::Embed | Kernel::Pool | Kernel::Geglu | Kernel::Rope => wrap(work.div_ceil(64)),
            // one workgroup per row / per (token, head)
            Kernel::LayerNorm | Kernel::Attention | Kernel::RmsNorm | Kernel::AttentionGqa => {
                wrap(work)
            }
            // `work` = m rows, `n` outputs
            Kernel::MatmulQ8 => (n.div_ceil(MATMUL_TN), work.div_ceil(MATMUL_TM)),
        }
    }
}

pub struct Pipelines {
    pipelines: Vec<(Kernel, wgpu::ComputePipeline)>,
}

impl Pipelines {
    pub fn new(gpu: &Gpu) -> Self {
        let pipelines = ALL
            .iter()
            .map(|&k| {
                let module = gpu
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&format!("{k:?}")),
                        source: wgpu::ShaderSource::Wgsl(k.source().into()),
                    });
                let pipeline =
                    gpu.device
                        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(&format!("{k:?}")),
                            layout: None,
                            module: &module,
                            entry_point: Some("main"),
                            compilation_options: Default::default(),
                            cache: None,
                        });
                (k, pipeline)
            })
            .collect();
        Self { pipelines }
    }

    pub fn get(&self, k: Kernel) -> &wgpu::ComputePipeline {
        &self.pipelines.iter().find(|(p, _)| *p == k).unwrap().1
    }

    /// A bind group for `k`: the uniform block at `params_offset` in `params`, then `buffers` in binding order.
    pub fn bind_group(
        &self,
        gpu: &Gpu,
        k: Kernel,
        params: &wgpu::Buffer,
        params_offset: u64,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        debug_assert_eq!(buffers.len(), k.bindings().len(), "{k:?}");
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: params,
                offset: params_offset,
                size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
            }),
        }];
        entries.extend(
            buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                }),
        );
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("{k:?}")),
            layout: &self.get(k).get_bind_group_layout(0),
            entries: &entries,
        })
    }
}

/// Record one dispatch.
pub fn dispatch(
    pass: &mut wgpu::ComputePass<'_>,
    pipeline: &wgpu::ComputePipeline,
    bind: &wgpu::BindGroup,
    groups: (u32, u32),
) {
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}

pub fn params_bytes(all: &[Params]) -> Vec<u8> {
    let mut out = vec![0u8; all.len() * PARAMS_STRIDE as usize];
    for (i, p) in all.iter().enumerate() {
        for (j, w) in p.iter().enumerate() {
            let at = i * PARAMS_STRIDE as usize + j * 4;
            out[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
    }
    out
}
