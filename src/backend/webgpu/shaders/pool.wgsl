// Mean pooling: pooled[s] = mean of x over the tokens of sequence s, one invocation per output element.

struct Params {
    seqs: u32,
    hidden: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> seq_info: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * 64u + gid.x;
    if idx >= p.seqs * p.hidden {
        return;
    }
    let s = idx / p.hidden;
    let d = idx % p.hidden;
    let start = seq_info[s];
    let end = seq_info[s + 1u];
    var acc = 0.0;
    for (var t = start; t < end; t++) {
        acc += x[t * p.hidden + d];
    }
    out[idx] = acc / f32(end - start);
}
