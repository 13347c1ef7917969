// Gemma's gated FFN activation: out = gelu_tanh(gate) * up, one invocation per output element. gate and up are
// column blocks of one row (a fused gate|up matmul: up_off = width, stride = 2 * width) or any other layout
// with a common row stride; out is rows x width, contiguous, ready for the down projection.

struct Params {
    rows: u32,
    width: u32,
    stride: u32,     // row length of x
    up_off: u32,     // column of up in x's rows (gate starts at column 0)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// as `gelu_tanh` in backend/cpu/ops.rs; tanh's argument clamped because tanh(10) is 1 in f32 and some drivers
// compute tanh from exponentials that overflow for large inputs
fn gelu_tanh(u: f32) -> f32 {
    let z = clamp(0.7978846 * (u + 0.044715 * u * u * u), -10.0, 10.0);
    return 0.5 * u * (1.0 + tanh(z));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * 64u + gid.x;
    if idx >= p.rows * p.width {
        return;
    }
    let t = idx / p.width;
    let i = idx % p.width;
    let row = t * p.stride;
    out[idx] = gelu_tanh(x[row + i]) * x[row + p.up_off + i];
}
