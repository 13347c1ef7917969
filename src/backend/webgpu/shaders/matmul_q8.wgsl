// y = x W^T + b (optionally GELU(erf)), with W int8 rows + one f32 scale per 32-element block (Q8_0 as uploaded,
// repacked 4-aligned: i8 values 4 per u32, scales and then the bias in `aux`). x: m x k f32, y: m x n f32 from
// element `y_off` of its buffer.
// `dense` = 1: W is plain f32 (small unquantized tensors such as the head) and `aux` is just the bias.
// Tiles of 32 rows x 64 outputs, k in steps of one Q8_0 block; each of 16x16 invocations owns 2 x 4 outputs.
// Any m, n; k a multiple of 32 for Q8_0 (a block), any k when dense. Reusable for every decoder projection
// (GeGLU = two of these + a multiply).
// One row of int8 weights against one token (m = 1: decoding) takes a matrix-vector path in the same launch
// geometry: 4 invocations per output row, each over every 4th word of it, then a sum of the 4. The tiled path would
// compute 32 rows of x for 1 real one and dequantize through shared memory behind two barriers per block.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    gelu: u32,
    bias_off: u32,   // offset of the bias in `aux` (scales come first: n * k / 32)
    dense: u32,
    y_off: u32,      // where row 0 of the output starts in y (the decoder writes k|v straight into its cache)
    _pad2: u32,
}

const TM: u32 = 32u;
const TN: u32 = 64u;
const BK: u32 = 32u;
const LD: u32 = 33u; // padded row of the shared tiles: no bank conflicts when invocations read different rows

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

var<workgroup> xs: array<f32, TM * LD>;
var<workgroup> ws: array<f32, TN * LD>;

// erf as a rational function on [-4, 4]: the same coefficients as backend/cpu/ops.rs (Eigen's fast erf)
fn erf(v: f32) -> f32 {
    let x = clamp(v, -4.0, 4.0);
    let x2 = x * x;
    var a = x2 * -2.72614225801306e-10 + 2.77068142495902e-08;
    a = x2 * a + -2.10102402082508e-06;
    a = x2 * a + -5.69250639462346e-05;
    a = x2 * a + -7.34990630326855e-04;
    a = x2 * a + -2.95459980854025e-03;
    a = x2 * a + -1.60960333262415e-02;
    var b = x2 * -1.45660718464996e-05 + -2.13374055278905e-04;
    b = x2 * b + -1.68282697438203e-03;
    b = x2 * b + -7.37332916720468e-03;
    b = x2 * b + -1.42647390514189e-02;
    return x * a / b;
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf(v * 0.7071067811865476));
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let m0 = wg.y * TM;
    let n0 = wg.x * TN;
    let kw = p.k / 4u;      // u32 words per weight row
    let kb = p.k / 32u;     // blocks per weight row
    if p.m == 1u && p.dense == 0u {
        let lane = li % 4u;
        let row = n0 + li / 4u;
        var s = 0.0;
        if row < p.n {
            for (var w = lane; w < kw; w += 4u) {
                let word = wq[row * kw + w];
                var d = 0.0;
                for (var b = 0u; b < 4u; b++) {
                    let q = bitcast<i32>(word << (24u - 8u * b)) >> 24u;
                    d += f32(q) * x[w * 4u + b];
                }
                s += d * aux[row * kb + w / 8u];
            }
        }
        xs[li] = s; // the 4 partial sums of a row, side by side
        workgroupBarrier();
        if lane == 0u && row < p.n {
            var v = (xs[li] + xs[li + 1u]) + (xs[li + 2u] + xs[li + 3u]) + aux[p.bias_off + row];
            if p.gelu != 0u {
                v = gelu(v);
            }
            y[p.y_off + row] = v;
        }
        return;
    }
    var acc: array<array<f32, 4>, 2>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // x tile: 32 x 32 floats, 4 per invocation, coalesced along k
        for (var i = 0u; i < 4u; i++) {
            let e = li + 256u * i;
            let r = e / BK;
            let c = e % BK;
            var v = 0.0;
            if m0 + r < p.m && k0 + c < p.k {
                v = x[(m0 + r) * p.k + k0 + c];
            }
            xs[r * LD + c] = v;
        }
        if p.dense != 0u {
            // f32 weight tile: 64 x 32 floats, 8 per invocation
            for (var i = 0u; i < 8u; i++) {
                let e = li + 256u * i;
                let r = e / BK;
                let c = e % BK;
                var v = 0.0;
                if n0 + r < p.n && k0 + c < p.k {
                    v = bitcast<f32>(wq[(n0 + r) * p.k + k0 + c]);
                }
                ws[r * LD + c] = v;
            }
        }
        // int8 weight tile: 64 rows x 8 words, 2 words per invocation, dequantized once into shared memory
        for (var i = 0u; i < 2u && p.dense == 0u; i++) {
            let e = li + 256u * i;
            let r = e / 8u;
            let c = e % 8u;
            let row = n0 + r;
            var word = 0u;
            var scale = 0.0;
            if row < p.n {
                word = wq[row * kw + k0 / 4u + c];
                scale = aux[row * kb + k0 / 32u];
            }
            for (var b = 0u; b < 4u; b++) {
                let q = bitcast<i32>(word << (24u - 8u * b)) >> 24u;
                ws[r * LD + c * 4u + b] = f32(q) * scale;
            }
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a0 = xs[lid.y * LD + kk];
            let a1 = xs[(lid.y + 16u) * LD + kk];
            for (var j = 0u; j < 4u; j++) {
                let w = ws[(lid.x + 16u * j) * LD + kk];
                acc[0][j] += a0 * w;
                acc[1][j] += a1 * w;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 2u; i++) {
        let row = m0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + lid.x + 16u * j;
            if row < p.m && col < p.n {
                var v = acc[i][j] + aux[p.bias_off + col];
                if p.gelu != 0u {
                    v = gelu(v);
                }
                y[p.y_off + row * p.n + col] = v;
            }
        }
    }
}
