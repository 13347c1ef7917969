// Scaled dot-product attention over ragged sequences: each query token attends to the tokens of its own sequence
// only (an offset table instead of padding + mask). One workgroup per (token, head); keys in chunks of 64 with an
// online softmax (running max and sum), so any sequence length works in fixed shared memory.
// q, k, v are column blocks of one fused qkv buffer (row stride `stride`). For the decoder: add a causal bound
// (end = t + 1) and map head -> kv head for grouped-query attention; RoPE is applied before this kernel.

struct Params {
    tokens: u32,
    heads: u32,
    head_dim: u32,
    hidden: u32,     // heads * head_dim: column offset of k, 2 * hidden of v, and the ctx row length
    stride: u32,     // row length of qkv
    seqs: u32,       // seq_info layout: starts[seqs + 1] | seq_of_token[tokens] | ...
    scale: f32,
    _pad0: u32,
}

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> seq_info: array<u32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> ctx: array<f32>;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> acc: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;
var<workgroup> bounds: vec2<u32>;

fn workgroup_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn workgroup_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let wid = wg.y * nwg.x + wg.x;
    if wid >= p.tokens * p.heads {
        return;
    }
    let t = wid / p.heads;
    let head = wid % p.heads;
    let col = head * p.head_dim;
    if lid == 0u {
        let s = seq_info[p.seqs + 1u + t];
        bounds = vec2<u32>(seq_info[s], seq_info[s + 1u]);
    }
    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = qkv[t * p.stride + col + d] * p.scale;
        acc[d] = 0.0;
    }
    // the sequence bounds come from storage: make them provably uniform for the loop with barriers
    let r = workgroupUniformLoad(&bounds);
    var m_run = -3.0e38;
    var l_run = 0.0;
    for (var c0 = r.x; c0 < r.y; c0 += WG) {
        let j = c0 + lid;
        var s = -3.0e38;
        if j < r.y {
            var sc = 0.0;
            let kb = j * p.stride + p.hidden + col;
            for (var d = 0u; d < p.head_dim; d++) {
                sc += qs[d] * qkv[kb + d];
            }
            s = sc;
        }
        let m_new = max(m_run, workgroup_max(lid, s));
        var e = 0.0;
        if j < r.y {
            e = exp(s - m_new);
        }
        probs[lid] = e;
        let alpha = exp(m_run - m_new);
        l_run = l_run * alpha + workgroup_sum(lid, e);
        m_run = m_new;
        let n = min(WG, r.y - c0);
        for (var d = lid; d < p.head_dim; d += WG) {
            var a = acc[d] * alpha;
            let vb = c0 * p.stride + 2u * p.hidden + col + d;
            for (var jj = 0u; jj < n; jj++) {
                a += probs[jj] * qkv[vb + jj * p.stride];
            }
            acc[d] = a;
        }
        workgroupBarrier();
    }
    for (var d = lid; d < p.head_dim; d += WG) {
        ctx[t * p.hidden + col + d] = acc[d] / l_run;
    }
}
