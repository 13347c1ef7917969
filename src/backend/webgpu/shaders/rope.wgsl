// Rotary position embedding in place, NeoX style as model/guardian.rs `Rope::apply`: element i of a head is
// rotated against element i + head_dim / 2 (halves, not adjacent pairs), by angle pos * base^(-2i / head_dim).
// Token t is at position pos0 + t. Heads are `head_dim` slices at `base + t * stride + h * head_dim`, h < per_token:
// with a fused [q heads | k heads | v] row, q and k are one launch (per_token = heads + kv_heads).
// cos/sin come from the CPU's own f64-computed tables (`Rope::new`, uploaded once): WGSL's sin/cos are only
// specified to ~2^-11 absolute on [-pi, pi] and an f32 angle near position 2048 is already off by ~1e-4 rad.
// One invocation per (token, head, i < head_dim / 2).

struct Params {
    tokens: u32,
    per_token: u32,
    head_dim: u32,
    stride: u32,
    base: u32,
    pos0: u32,
    sin_off: u32,    // tables = cos[positions][head_dim / 2] | sin[positions][head_dim / 2]
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> tables: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * 64u + gid.x;
    let half = p.head_dim / 2u;
    let per_tok = p.per_token * half;
    if idx >= p.tokens * per_tok {
        return;
    }
    let t = idx / per_tok;
    let h = (idx % per_tok) / half;
    let i = idx % half;
    let at = p.base + t * p.stride + h * p.head_dim + i;
    let ti = (p.pos0 + t) * half + i;
    let c = tables[ti];
    let s = tables[p.sin_off + ti];
    let a = x[at];
    let b = x[at + half];
    x[at] = a * c - b * s;
    x[at + half] = b * c + a * s;
}
