// Gemma's RMSNorm, one workgroup per row: y = x / sqrt(mean(x^2) + eps) * w, with w as stored (the GGUF norm
// weights already carry Gemma's `+1`, as `rms_norm` in backend/cpu/ops.rs assumes).
// A row is `width` values at `base + t * stride + h * width` for token t and head h < per_token: plain rows
// (per_token 1, stride = width) or the per-head q/k norms on head_dim slices of a wider (fused qkv) row.
// mode 0: out = norm(x) (pre-norms: the residual stream stays intact); 1: out += norm(x) (Gemma's sandwich
// post-norms, x += post_norm(branch)); 2: out = norm(out) in place (q/k norms; `x` is not read, because WebGPU
// forbids binding one buffer both read-only and writable in a dispatch).

struct Params {
    rows: u32,       // tokens * per_token
    width: u32,
    mode: u32,
    eps: f32,
    w_off: u32,      // offset of the weight in `norm`
    per_token: u32,
    stride: u32,
    base: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
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

fn load(i: u32) -> f32 {
    if p.mode == 2u {
        return out[i];
    }
    return x[i];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wg.y * nwg.x + wg.x;
    if row >= p.rows {
        return;
    }
    let at = p.base + (row / p.per_token) * p.stride + (row % p.per_token) * p.width;
    var q = 0.0;
    for (var d = lid; d < p.width; d += WG) {
        let v = load(at + d);
        q += v * v;
    }
    let inv = 1.0 / sqrt(workgroup_sum(lid, q) / f32(p.width) + p.eps);
    for (var d = lid; d < p.width; d += WG) {
        let y = load(at + d) * (inv * norm[p.w_off + d]);
        if p.mode == 1u {
            out[at + d] += y;
        } else {
            out[at + d] = y;
        }
    }
}
