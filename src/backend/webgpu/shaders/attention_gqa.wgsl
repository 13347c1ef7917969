// Causal grouped-query attention of m new query rows (positions pos0..pos0+m) against a KV cache, for the decoder.
// The cache is a plain buffer with one row per position, `[k (kv_heads * head_dim) | v (kv_heads * head_dim)]`,
// holding positions 0..pos0+m (this call's keys and values already written, RoPE'd and normed). Query head h reads
// kv head h / (heads / kv_heads). The query at position p sees keys j with j <= p and, when window > 0 (local
// layers), p - j < window: exactly the CPU's `lo = (p + 1).saturating_sub(window)` (model/guardian.rs); its ring
// buffer is only storage, on the GPU masking by position is enough. window = 0: every earlier position (global).
// One workgroup per (query row, head); keys in chunks of 64 with an online softmax (running max and sum), so any
// context length works in fixed shared memory.

struct Params {
    m: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    pos0: u32,
    window: u32,
    scale: f32,
    q_stride: u32,   // row length of q (q heads at columns 0..heads * head_dim); ctx rows are heads * head_dim
}

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> ctx: array<f32>;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> acc: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

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
    if wid >= p.m * p.heads {
        return;
    }
    let t = wid / p.heads;
    let head = wid % p.heads;
    let kvd = p.kv_heads * p.head_dim;
    let k_col = (head / (p.heads / p.kv_heads)) * p.head_dim;
    let pos = p.pos0 + t;
    // keys lo..=pos
    var lo = 0u;
    if p.window > 0u && pos + 1u > p.window {
        lo = pos + 1u - p.window;
    }
    let hi = pos + 1u;
    for (var d = lid; d < p.head_dim; d += WG) {
        qs[d] = q[t * p.q_stride + head * p.head_dim + d];
        acc[d] = 0.0;
    }
    workgroupBarrier();
    var m_run = -3.0e38;
    var l_run = 0.0;
    for (var c0 = lo; c0 < hi; c0 += WG) {
        let j = c0 + lid;
        var s = -3.0e38;
        if j < hi {
            var sc = 0.0;
            let kb = j * 2u * kvd + k_col;
            for (var d = 0u; d < p.head_dim; d++) {
                sc += qs[d] * kv[kb + d];
            }
            s = sc * p.scale;
        }
        let m_new = max(m_run, workgroup_max(lid, s));
        var e = 0.0;
        if j < hi {
            e = exp(s - m_new);
        }
        probs[lid] = e;
        let alpha = exp(m_run - m_new);
        l_run = l_run * alpha + workgroup_sum(lid, e);
        m_run = m_new;
        let n = min(WG, hi - c0);
        for (var d = lid; d < p.head_dim; d += WG) {
            var a = acc[d] * alpha;
            let vb = c0 * 2u * kvd + kvd + k_col + d;
            for (var jj = 0u; jj < n; jj++) {
                a += probs[jj] * kv[vb + jj * 2u * kvd];
            }
            acc[d] = a;
        }
        workgroupBarrier();
    }
    for (var d = lid; d < p.head_dim; d += WG) {
        ctx[t * p.heads * p.head_dim + head * p.head_dim + d] = acc[d] / l_run;
    }
}
