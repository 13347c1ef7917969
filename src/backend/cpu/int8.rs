//! Int8 x int8 matrix multiply for linear layers whose weights have one scale per output row (the shipped
//! classifier's `Q8_0` tensors are written that way: every block of a row carries the same scale).
//!
//! y[t][r] = (sum_k xq[t][k] * wq[r][k]) * xs[t] * ws[r] + b[r]
//!
//! Activations are quantized per token to int16 (symmetric, max |x| / L with L = min(32767, (2^31 - 1) / (127 k)),
//! so the i32 accumulation is exact and can never overflow; L = 11,008 for k = 1536). int16 rather than int8
//! activations: BERT's hidden states have outlier dimensions, and 127 levels moved probabilities by up to 0.07 from
//! the fp32 function; with int16 the runtime matches it to ~1e-4. The weights stay int8 and are widened in
//! registers, which the kernels did anyway, so the cost is only twice the (small) activation bytes. Each output is
//! rescaled once instead of once per 32-element block, which is what makes this faster than a per-block Q8_0 dot
//! product. Kernels: wasm32 simd128 (`i32x4.dot_i16x8_s`) and x86_64 AVX2 (`vpmaddwd`) on row-major weights,
//! x86_64 AVX-512 VNNI (`vpdpwssd`) on weights repacked at load into 16-row panels (see [`Layout`]), and a
//! portable fallback; all compute identical integers and finish them with the same float operations.

use super::ops::{round_nearest, to_i32, wide_on_x86};

/// A linear layer `y = x W^T + b` with int8 weights and a per-row scale.
pub struct Int8Linear {
    rows: usize,
    k: usize,
    layout: Layout,
    weights: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<f32>,
}

/// How the int8 weights lie in memory: chosen at load for the kernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Row-major `rows x k`: the simd128 and AVX2 kernels, which sum each row against each token.
    Rows,
    /// Panels of 16 rows (`[rows / 16][k / 2][16][2]`, the last panel padded with zero rows): one 32-byte load,
    /// widened to int16, holds 16 rows x 2 columns, and `vpdpwssd` against a broadcast pair of activations
    /// updates 16 outputs at once. No horizontal sums, and each weight load feeds a block of tokens.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // its kernel is x86_64-only
    Panels16,
}

impl Layout {
    /// The layout whose kernel this CPU runs fastest (AVX-512 VNNI: panels; otherwise rows).
    fn for_this_cpu() -> Self {
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            return Self::Panels16;
        }
        Self::Rows
    }

    fn len(self, rows: usize, k: usize) -> usize {
        match self {
            Self::Rows => rows * k,
            Self::Panels16 => rows.div_ceil(16) * 16 * k,
        }
    }

    /// Position of weight (row `r`, column `c`).
    fn index(self, r: usize, c: usize, k: usize) -> usize {
        match self {
            Self::Rows => r * k + c,
            Self::Panels16 => (r / 16) * 16 * k + (c / 2) * 32 + (r % 16) * 2 + c % 2,
        }
    }
}

impl Int8Linear {
    /// From GGUF `Q8_0` block bytes (34 bytes per 32 weights: f16 scale + 32 i8). Returns `None` when a row's
    /// blocks do not share one scale (the caller then keeps candle's per-block kernel).
    pub fn from_q8_0_blocks(data: &[u8], rows: usize, k: usize, bias: Vec<f32>) -> Option<Self> {
        Self::from_q8_0_blocks_in(Layout::for_this_cpu(), data, rows, k, bias)
    }

    fn from_q8_0_blocks_in(
        layout: Layout,
        data: &[u8],
        rows: usize,
        k: usize,
        bias: Vec<f32>,
    ) -> Option<Self> {
        const BLOCK: usize = 34;
        if k % 32 != 0 || data.len() != rows * (k / 32) * BLOCK || bias.len() != rows {
            return None;
        }
        let blocks_per_row = k / 32;
        let mut weights = vec![0i8; layout.len(rows, k)];
        let mut scales = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &data[r * blocks_per_row * BLOCK..(r + 1) * blocks_per_row * BLOCK];
            let d = [row[0], row[1]];
            for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                if block[..2] != d {
                    return None;
                }
                match layout {
                    Layout::Rows => {
                        let at = r * k + b * 32;
                        for (o, &v) in weights[at..at + 32].iter_mut().zip(&block[2..]) {
                            *o = v as i8;
                        }
                    }
                    Layout::Panels16 => {
                        for (c, &v) in (b * 32..).zip(&block[2..]) {
                            weights[layout.index(r, c, k)] = v as i8;
                        }
                    }
                }
            }
            scales.push(half::f16::from_le_bytes(d).to_f32());
        }
        Some(Self {
            rows,
            k,
            layout,
            weights,
            scales,
            bias,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Row `r` of the weight matrix, dequantized into `out` (length k): lets a tied embedding gather its rows
    /// from the same int8 table its output head multiplies with.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let s = self.scales[r];
        for (c, o) in out.iter_mut().enumerate().take(self.k) {
            *o = self.weights[self.layout.index(r, c, self.k)] as f32 * s;
        }
    }

    /// `x`: m x k row-major; returns m x rows.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), m * self.k);
        let (xq, xs) = quantize_rows(x, m, self.k);
        self.forward_quantized(&xq, &xs)
    }

    /// `forward` on activations already quantized by [`quantize_rows`] (m = `xs.len()` rows of k): layers that
    /// read the same input (query, key and value) quantize it once.
    pub fn forward_quantized(&self, xq: &[i16], xs: &[f32]) -> Vec<f32> {
        let m = xs.len();
        assert_eq!(xq.len(), m * self.k, "activations of the wrong width");
        let (rows, k) = (self.rows, self.k);
        let mut out = vec![0f32; m * rows];
        let part = |r0: usize, w: &[i8], xq: &[i16], xs: &[f32], out: &mut [f32]| {
            Part {
                layout: self.layout,
                k,
                weights: w,
                scales: &self.scales[r0..r0 + out.len() / xs.len()],
                bias: &self.bias[r0..r0 + out.len() / xs.len()],
                xq,
                xs,
            }
            .run(out)
        };
        // natively, token chunks in parallel (RAYON_NUM_THREADS / --threads); wasm32 is single-threaded
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            let threads = rayon::current_num_threads();
            if threads > 1 && m >= 4 {
                let chunk = m.div_ceil(threads).next_multiple_of(2);
                out.par_chunks_mut(chunk * rows)
                    .zip(xq.par_chunks(chunk * k).zip(xs.par_chunks(chunk)))
                    .for_each(|(o, (q, s))| part(0, &self.weights, q, s, o));
                return out;
            }
            // one token (decoding): split the rows instead, when there are enough to pay for the threads;
            // chunks of whole panels, which are contiguous in either layout
            if threads > 1 && m == 1 && rows * k >= 1 << 20 {
                let chunk = rows.div_ceil(threads).next_multiple_of(16);
                out.par_chunks_mut(chunk)
                    .zip(self.weights.par_chunks(chunk * k))
                    .enumerate()
                    .for_each(|(c, (o, w))| part(c * chunk, w, xq, xs, o));
                return out;
            }
        }
        part(0, &self.weights, xq, xs, &mut out);
        out
    }
}

/// One kernel call: rows `scales.len()` of a layer (all of them, or a chunk of whole panels) against a block of
/// quantized tokens, finished as y = acc * xs[t] * ws[r] + b[r] (in that order, so every kernel rounds alike).
struct Part<'a> {
    layout: Layout,
    k: usize,
    weights: &'a [i8],
    scales: &'a [f32],
    bias: &'a [f32],
    xq: &'a [i16],
    xs: &'a [f32],
}

impl Part<'_> {
    /// `out`: tokens x rows, row-major.
    fn run(&self, out: &mut [f32]) {
        let (n, k, xs) = (self.scales.len(), self.k, self.xs);
        assert!(out.len() == xs.len() * n && self.bias.len() == n);
        match self.layout {
            Layout::Rows => kernel::matmul(self.xq, xs.len(), self.weights, n, k, |t, r, acc| {
                out[t * n + r] = acc as f32 * xs[t] * self.scales[r] + self.bias[r];
            }),
            Layout::Panels16 => {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: this layout is only chosen where AVX-512 BW + VNNI are present (Layout::for_this_cpu,
                // or a test that checked); the kernel asserts every slice length it reads.
                unsafe {
                    avx512::linear(self, out)
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("the panel layout is only chosen where its kernel runs")
            }
        }
    }
}

/// Several layers on one input (query / key / value, gate / up): the input is quantized once.
pub fn forward_shared_input<const N: usize>(
    layers: [&Int8Linear; N],
    x: &[f32],
    m: usize,
) -> [Vec<f32>; N] {
    let k = layers.first().map_or(0, |l| l.k);
    let (xq, xs) = quantize_rows(x, m, k);
    layers.map(|l| l.forward_quantized(&xq, &xs))
}

/// Largest activation level for rows of length `k`: sum_k |x| |w| <= k * L * 127 stays inside i32.
pub fn activation_levels(k: usize) -> i16 {
    (i32::MAX as usize / (127 * k.max(1))).min(i16::MAX as usize) as i16
}

wide_on_x86! {
quantize_rows_baseline =>
/// Symmetric per-row int16 quantization to `activation_levels(k)`: returns (values, scale per row).
/// Written so it vectorises on every target: `f32::max` and `f32::round` are scalar libm calls on wasm32 and on
/// baseline x86_64 and took about a quarter of a wasm classification; comparisons and the add-subtract rounding
/// (`ops::round_nearest`) are plain vector instructions.
pub fn quantize_rows(x: &[f32], m: usize, k: usize) -> (Vec<i16>, Vec<f32>) {
    let levels = activation_levels(k) as f32;
    let mut q = vec![0i16; m * k];
    let mut s = vec![0f32; m];
    for t in 0..m {
        let row = &x[t * k..(t + 1) * k];
        let amax = abs_max(row);
        let scale = if amax > 0.0 { amax / levels } else { 1.0 };
        let inv = 1.0 / scale;
        for (o, v) in q[t * k..(t + 1) * k].iter_mut().zip(row) {
            // through i32 (`to_i32`): a float-to-i16 `as` cast saturates in steps that LLVM scalarises (wasm32,
            // baseline x86_64); the value is already clamped, so i32 -> i16 is exact and the loop stays vector
            *o = to_i32(round_nearest((v * inv).clamp(-levels, levels))) as i16;
        }
        s[t] = scale;
    }
    (q, s)
}
}

/// max |x| (0 for an empty slice; NaNs are skipped, as `f32::max` skips them), with eight independent lanes.
#[inline]
fn abs_max(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            let a = c[j].abs();
            acc[j] = if a > acc[j] { a } else { acc[j] };
        }
    }
    tail.iter()
        .chain(&acc)
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// Reference integer dot product (also the portable kernel's inner loop).
pub fn dot_i16_i8(a: &[i16], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

mod kernel {
    /// Calls `emit(token, row, exact_integer_dot)` for every token x row pair.
    pub fn matmul(
        x: &[i16],
        m: usize,
        w: &[i8],
        n: usize,
        k: usize,
        mut emit: impl FnMut(usize, usize, i32),
    ) {
        #[cfg(target_arch = "wasm32")]
        {
            if cfg!(target_feature = "simd128") && k % 8 == 0 {
                // SAFETY: simd128 is enabled at compile time (checked); slices are bounds-checked by the kernel's asserts.
                return unsafe { super::simd128::matmul(x, m, w, n, k, &mut emit) };
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            if k % 16 == 0 && std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present (checked above); slices are bounds-checked by the kernel's asserts.
                return unsafe { super::avx2::matmul(x, m, w, n, k, &mut emit) };
            }
        }
        for t in 0..m {
            let xt = &x[t * k..(t + 1) * k];
            for r in 0..n {
                emit(t, r, super::dot_i16_i8(xt, &w[r * k..(r + 1) * k]));
            }
        }
    }
}

/// One tiling for every SIMD kernel: 4 weight rows x 2 tokens, so each weight vector load feeds two tokens and
/// each activation load four rows. Activations arrive as int16; weights are int8, widened in registers. Only the
/// vector width and the multiply-accumulate differ between kernels; all compute the same integer sums, bit for bit.
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
macro_rules! tiled_matmul {
    ($features:literal, $step:literal, $zero:expr, $load_x:expr, $load_w:expr, $madd:expr, $hsum:expr) => {
        #[target_feature(enable = $features)]
        pub unsafe fn matmul(
            x: &[i16],
            m: usize,
            w: &[i8],
            n: usize,
            k: usize,
            emit: &mut impl FnMut(usize, usize, i32),
        ) {
            assert!(x.len() >= m * k && w.len() >= n * k && k % $step == 0);
            let mut t = 0;
            while t < m {
                let two = t + 1 < m;
                let x0 = x[t * k..].as_ptr();
                let x1 = if two { x[(t + 1) * k..].as_ptr() } else { x0 };
                let mut r = 0;
                while r < n {
                    let rows = (n - r).min(4);
                    let wp: [*const i8; 4] =
                        core::array::from_fn(|i| w[(r + i.min(rows - 1)) * k..].as_ptr());
                    let mut acc = [$zero; 8];
                    let mut kk = 0;
                    while kk < k {
                        let a = $load_x(x0.add(kk));
                        let b = $load_x(x1.add(kk));
                        for i in 0..4 {
                            let wv = $load_w(wp[i].add(kk));
                            acc[2 * i] = $madd(acc[2 * i], wv, a);
                            acc[2 * i + 1] = $madd(acc[2 * i + 1], wv, b);
                        }
                        kk += $step;
                    }
                    for i in 0..rows {
                        emit(t, r + i, $hsum(acc[2 * i]));
                        if two {
                            emit(t + 1, r + i, $hsum(acc[2 * i + 1]));
                        }
                    }
                    r += 4;
                }
                t += 2;
            }
        }
    };
}

/// 128 bits: `i32x4.dot_i16x8_s` (int16 pairs -> int32) then `add`.
#[cfg(target_arch = "wasm32")]
mod simd128 {
    use core::arch::wasm32::*;

    #[inline(always)]
    fn hsum(v: v128) -> i32 {
        i32x4_extract_lane::<0>(v)
            + i32x4_extract_lane::<1>(v)
            + i32x4_extract_lane::<2>(v)
            + i32x4_extract_lane::<3>(v)
    }

    tiled_matmul!(
        "simd128",
        8,
        i32x4_splat(0),
        |p: *const i16| v128_load(p as *const v128),
        |p: *const i8| i16x8_load_extend_i8x8(p),
        |acc, w, x| i32x4_add(acc, i32x4_dot_i16x8(w, x)),
        |v| hsum(v)
    );
}

/// 256 bits: `madd` (int16 pairs -> int32) then `add`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    tiled_matmul!(
        "avx2",
        16,
        _mm256_setzero_si256(),
        |p: *const i16| _mm256_loadu_si256(p as *const __m256i),
        |p: *const i8| _mm256_cvtepi8_epi16(_mm_loadu_si128(p as *const __m128i)),
        |acc, w, x| _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)),
        |v| hsum(v)
    );
}

/// 512 bits with VNNI on the panel layout: each 16-lane accumulator holds 16 rows' sums for one token, so a tile
/// of P panels x T tokens keeps P * T accumulators in registers (at most 16 of the 32), loads and widens P weight
/// vectors per column pair and feeds each to T `vpdpwssd`s with the token's pair broadcast from memory.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Part;
    use core::arch::x86_64::*;

    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn linear(p: &Part, out: &mut [f32]) {
        let (m, n, k) = (p.xs.len(), p.scales.len(), p.k);
        assert!(
            k % 2 == 0
                && p.xq.len() >= m * k
                && p.weights.len() >= n.div_ceil(16) * 16 * k
                && p.bias.len() >= n
                && out.len() >= m * n
        );
        let mut t = 0;
        while t < m {
            // enough independent accumulators to hide vpdpwssd's latency, even for one token
            t += match m - t {
                8.. => tokens::<8, 2>(p, t, out),
                4..=7 => tokens::<4, 4>(p, t, out),
                2..=3 => tokens::<2, 8>(p, t, out),
                _ => tokens::<1, 8>(p, t, out),
            };
        }
    }

    /// Every panel for tokens t0..t0 + T, P panels at a time; returns T.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tokens<const T: usize, const P: usize>(
        p: &Part,
        t0: usize,
        out: &mut [f32],
    ) -> usize {
        let panels = p.scales.len().div_ceil(16);
        let mut i = 0;
        while i + P <= panels {
            tile::<T, P>(p, t0, i, out);
            i += P;
        }
        while i < panels {
            tile::<T, 1>(p, t0, i, out);
            i += 1;
        }
        T
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile<const T: usize, const P: usize>(
        p: &Part,
        t0: usize,
        panel0: usize,
        out: &mut [f32],
    ) {
        let (n, k) = (p.scales.len(), p.k);
        let x = p.xq.as_ptr().add(t0 * k);
        let w = p.weights.as_ptr().add(panel0 * 16 * k);
        let mut acc = [[_mm512_setzero_si512(); T]; P];
        for pair in 0..k / 2 {
            let mut wv = [_mm512_setzero_si512(); P];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm512_cvtepi8_epi16(_mm256_loadu_si256(
                    w.add(j * 16 * k + pair * 32) as *const __m256i
                ));
            }
            for t in 0..T {
                let xv =
                    _mm512_set1_epi32((x.add(t * k + pair * 2) as *const i32).read_unaligned());
                for j in 0..P {
                    acc[j][t] = _mm512_dpwssd_epi32(acc[j][t], wv[j], xv);
                }
            }
        }
        for (j, acc) in acc.iter().enumerate() {
            let r0 = (panel0 + j) * 16;
            let mask: __mmask16 = if n - r0 >= 16 {
                !0
            } else {
                (1 << (n - r0)) - 1
            };
            let scales = _mm512_maskz_loadu_ps(mask, p.scales.as_ptr().add(r0));
            let bias = _mm512_maskz_loadu_ps(mask, p.bias.as_ptr().add(r0));
            for (t, &a) in acc.iter().enumerate() {
                let xs = _mm512_set1_ps(p.xs[t0 + t]);
                let y = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), xs), scales),
                    bias,
                );
                _mm512_mask_storeu_ps(out.as_mut_ptr().add((t0 + t) * n + r0), mask, y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn q8_0_row_blocks(w: &[f32], rows: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
        let mut data = Vec::new();
        let mut deq = Vec::new();
        for r in 0..rows {
            let row = &w[r * k..(r + 1) * k];
            let d = half::f16::from_f32(row.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0);
            for b in row.chunks(32) {
                data.extend_from_slice(&d.to_le_bytes());
                for v in b {
                    let q = (v / d.to_f32()).round().clamp(-127.0, 127.0) as i8;
                    data.push(q as u8);
                    deq.push(q as f32 * d.to_f32());
                }
            }
        }
        (data, deq)
    }

    #[test]
    fn integer_kernel_is_exact_for_odd_shapes() {
        let mut seed = 7;
        for &(m, n, k) in &[
            (1, 1, 32),
            (3, 5, 64),
            (7, 13, 384),
            (2, 10, 96),
            (5, 4, 1536),
        ] {
            // extreme values too: the overflow bound must hold at +-levels
            let l = activation_levels(k) as f32;
            let x: Vec<i16> = (0..m * k)
                .map(|i| {
                    if i % 17 == 0 {
                        l as i16
                    } else {
                        (lcg(&mut seed) * l) as i16
                    }
                })
                .collect();
            let w: Vec<i8> = (0..n * k).map(|_| (lcg(&mut seed) * 127.0) as i8).collect();
            let check = |got: &[i32], which: &str| {
                for t in 0..m {
                    for r in 0..n {
                        assert_eq!(
                            got[t * n + r],
                            dot_i16_i8(&x[t * k..(t + 1) * k], &w[r * k..(r + 1) * k]),
                            "{which} {m}x{n}x{k}"
                        );
                    }
                }
            };
            let mut got = vec![0; m * n];
            kernel::matmul(&x, m, &w, n, k, |t, r, v| got[t * n + r] = v);
            check(&got, "dispatched");
            // the AVX2 kernel too where the dispatch picks another (the panel kernel has its own test)
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx2") && k % 16 == 0 {
                    let mut got = vec![0; m * n];
                    unsafe { avx2::matmul(&x, m, &w, n, k, &mut |t, r, v| got[t * n + r] = v) };
                    check(&got, "avx2");
                }
            }
        }
    }

    #[test]
    fn accumulation_cannot_overflow_at_the_extremes() {
        for k in [32usize, 384, 1536, 4096] {
            let l = activation_levels(k);
            let (x, w) = (vec![l; 2 * k], vec![127i8; 4 * k]);
            let mut got = vec![0; 8];
            kernel::matmul(&x, 2, &w, 4, k, |t, r, v| got[t * 4 + r] = v);
            let want = k as i64 * l as i64 * 127;
            assert!(want <= i32::MAX as i64);
            assert!(got.iter().all(|&v| v as i64 == want), "k={k}");
        }
    }

    #[test]
    fn linear_matches_f32_reference() {
        let mut seed = 11;
        let (m, rows, k) = (9, 12, 384);
        let w: Vec<f32> = (0..rows * k).map(|_| lcg(&mut seed) * 0.1).collect();
        let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
        let bias: Vec<f32> = (0..rows).map(|_| lcg(&mut seed)).collect();
        let (blocks, deq) = q8_0_row_blocks(&w, rows, k);
        let lin = Int8Linear::from_q8_0_blocks(&blocks, rows, k, bias.clone())
            .expect("uniform row scales");
        let y = lin.forward(&x, m);
        for t in 0..m {
            for r in 0..rows {
                let want: f32 =
                    (0..k).map(|i| x[t * k + i] * deq[r * k + i]).sum::<f32>() + bias[r];
                let got = y[t * rows + r];
                assert!(
                    (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{t},{r}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn quantization_matches_its_definition() {
        let mut seed = 5;
        for k in [1usize, 7, 8, 9, 384, 1000] {
            let mut x: Vec<f32> = (0..2 * k).map(|_| lcg(&mut seed) * 3.0).collect();
            x[k / 2] = -7.5; // the row maximum is a negative value
            if k > 8 {
                x[k + 3] = f32::NAN; // skipped by the maximum, as f32::max skips it
            }
            let (q, s) = quantize_rows(&x, 2, k);
            let l = activation_levels(k) as f32;
            for t in 0..2 {
                let row = &x[t * k..(t + 1) * k];
                let amax = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                assert_eq!(s[t], amax / l, "k={k} row {t}");
                let inv = 1.0 / s[t];
                for (i, v) in row.iter().enumerate() {
                    let want = (v * inv).round_ties_even().clamp(-l, l) as i16; // NaN -> 0
                    assert_eq!(q[t * k + i], want, "k={k} {v}");
                }
            }
            assert_eq!(q[k / 2], -(l as i16));
        }
        let (q, s) = quantize_rows(&[0.0; 16], 2, 8);
        assert!(q.iter().all(|&v| v == 0) && s == [1.0, 1.0]);
        // ties go to even, like f32::round_ties_even, over the whole activation range
        for y in [
            0.5f32, 1.5, 2.5, -0.5, -1.5, 32766.5, -32766.5, 1e-3, 4095.499,
        ] {
            assert_eq!(round_nearest(y), y.round_ties_even(), "{y}");
        }
        for i in -40_000i32..40_000 {
            let y = i as f32 * 0.25 + 0.125 * (i % 3) as f32;
            assert_eq!(round_nearest(y), y.round_ties_even(), "{y}");
        }
    }

    /// The panel layout's kernel against the row layout's, output for output, bit for bit: every token-block
    /// shape (1..=19 tokens), partial last panels, and `row_into` reading either layout.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn panel_kernel_matches_the_row_kernel_bit_for_bit() {
        if !avx512::available() {
            eprintln!("no AVX-512 VNNI here: the panel kernel is not exercised");
            return;
        }
        let mut seed = 3;
        for &(n, k) in &[(1, 32), (5, 64), (16, 384), (17, 96), (33, 1536), (100, 64)] {
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed) * 0.1).collect();
            let bias: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            let (blocks, _) = q8_0_row_blocks(&w, n, k);
            let rows = Int8Linear::from_q8_0_blocks_in(Layout::Rows, &blocks, n, k, bias.clone())
                .expect("uniform row scales");
            let panels = Int8Linear::from_q8_0_blocks_in(Layout::Panels16, &blocks, n, k, bias)
                .expect("uniform row scales");
            for m in 1..=19 {
                let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed) * 4.0).collect();
                let (a, b) = (rows.forward(&x, m), panels.forward(&x, m));
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "{m}x{n}x{k}");
            }
            let (mut a, mut b) = (vec![0f32; k], vec![0f32; k]);
            for r in [0, n / 2, n - 1] {
                rows.row_into(r, &mut a);
                panels.row_into(r, &mut b);
                assert_eq!(a, b, "row {r} of {n}x{k}");
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn quantization_avx2_copy_computes_the_baseline_values() {
        let mut seed = 9;
        for k in [7usize, 384, 1536] {
            let x: Vec<f32> = (0..3 * k).map(|_| lcg(&mut seed) * 5.0).collect();
            assert_eq!(
                quantize_rows(&x, 3, k),
                quantize_rows_baseline(&x, 3, k),
                "k={k}"
            );
        }
    }

    #[test]
    fn rejects_per_block_scales() {
        let mut data = vec![0u8; 2 * 34];
        data[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        data[34..36].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        assert!(Int8Linear::from_q8_0_blocks(&data, 1, 64, vec![0.0]).is_none());
    }
}
