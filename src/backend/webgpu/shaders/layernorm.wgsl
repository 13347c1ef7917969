// x[row] <- LayerNorm(x[row] + residual[row]) * w + b, one workgroup per row (any hidden size).
// Same two-pass (centred) variance as backend/cpu/ops.rs. RMSNorm for the decoder is this kernel without the mean.

struct Params {
    rows: u32,
    hidden: u32,
    has_res: u32,
    eps: f32,
    w_off: u32,      // offsets of weight and bias in `norm`
    b_off: u32,
    _pad0: u32,
    _pad1: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> res: array<f32>;
@group(0) @binding(3) var<storage, read> norm: array<f32>;

var<workgroup> red: array<f32, WG>;

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
    let row = wg.y * nwg.x + wg.x;
    if row >= p.rows {
        return;
    }
    let base = row * p.hidden;
    var s = 0.0;
    for (var d = lid; d < p.hidden; d += WG) {
        var v = x[base + d];
        if p.has_res != 0u {
            v += res[base + d];
            x[base + d] = v;
        }
        s += v;
    }
    let mean = workgroup_sum(lid, s) / f32(p.hidden);
    var q = 0.0;
    for (var d = lid; d < p.hidden; d += WG) {
        let c = x[base + d] - mean;
        q += c * c;
    }
    let inv = inverseSqrt(workgroup_sum(lid, q) / f32(p.hidden) + p.eps);
    for (var d = lid; d < p.hidden; d += WG) {
        x[base + d] = (x[base + d] - mean) * inv * norm[p.w_off + d] + norm[p.b_off + d];
    }
}
