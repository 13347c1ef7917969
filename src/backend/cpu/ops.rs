//! Elementwise and small reductions on plain `f32` slices for the CPU forward pass. Written with eight independent
//! accumulators so LLVM vectorises them (simd128 on wasm32, SSE/AVX natively) without reassociating floats.

/// Compiles a function twice on x86_64, for the baseline (SSE2) and with AVX2 (twice the vector width), and
/// picks at run time; elsewhere once (wasm32 has simd128 at compile time). No FMA is enabled, so both copies
/// round identically: the choice changes speed, never results (`avx2_copies_compute_the_baseline_bits` checks).
/// `wide_on_x86! { name_baseline => pub fn name(...) { ... } }` also defines the baseline copy under the first
/// name, for that test.
macro_rules! wide_on_x86 {
    ($base:ident => $(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        #[inline(always)]
        fn $base($($arg: $ty),*) $(-> $ret)? $body

        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $base($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: AVX2 is present (checked just above)
                    return unsafe { avx2($($arg),*) };
                }
            }
            $base($($arg),*)
        }
    };
}
pub(crate) use wide_on_x86;

/// Dot product of equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

wide_on_x86! {
matmul_baseline =>
/// out (m x n) = a (m x k) b (k x n), all row-major: blocks of 4 rows x 8 columns held in registers while k
/// runs, so each load of `b` feeds four rows and no sum is horizontal (0.7 vector ops per multiply-add on
/// simd128, against ~1 for row-by-row dot products). Attention's two small products use it.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    let wide = n - n % 8;
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        let a_rows: [&[f32]; 4] = core::array::from_fn(|r| &a[(i + r.min(rows - 1)) * k..][..k]);
        // columns past the last multiple of 8: plain dot products
        for r in i..i + rows {
            for j in wide..n {
                out[r * n + j] = (0..k).map(|d| a[r * k + d] * b[d * n + j]).sum();
            }
        }
        for j in (0..wide).step_by(8) {
            let mut acc = [[0f32; 8]; 4];
            for (d, b_row) in b.chunks_exact(n).take(k).enumerate() {
                let bv: &[f32; 8] = b_row[j..j + 8].try_into().expect("8 columns");
                for r in 0..4 {
                    let av = a_rows[r][d];
                    for c in 0..8 {
                        acc[r][c] += av * bv[c];
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                out[(i + r) * n + j..][..8].copy_from_slice(acc);
            }
        }
        i += 4;
    }
}
}

/// y += a * x
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

wide_on_x86! {
add_layer_norm_baseline =>
/// In place: each row of `x` (length `h`) <- LayerNorm(row + residual row) with weight `w` and bias `b`.
pub fn add_layer_norm(
    x: &mut [f32],
    residual: Option<&[f32]>,
    w: &[f32],
    b: &[f32],
    eps: f32,
    h: usize,
) {
    for (t, row) in x.chunks_exact_mut(h).enumerate() {
        if let Some(r) = residual {
            for (v, rv) in row.iter_mut().zip(&r[t * h..(t + 1) * h]) {
                *v += rv;
            }
        }
        let mean = sum(row) / h as f32;
        let mut var = [0f32; 8];
        let chunks = row.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for j in 0..8 {
                let d = c[j] - mean;
                var[j] += d * d;
            }
        }
        let var: f32 = (var.iter().sum::<f32>() + tail) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, wi), bi) in row.iter_mut().zip(w).zip(b) {
            *v = (*v - mean) * inv * wi + bi;
        }
    }
}
}

#[inline]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = x.chunks_exact(8);
    let tail: f32 = c.remainder().iter().sum();
    for v in c {
        for j in 0..8 {
            acc[j] += v[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// erf(x) as a rational function on [-4, 4] (Eigen's `generic_fast_erf_float`, error a few ulp): no `exp`, so the
/// GELU over every FFN activation vectorises.
#[inline]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906e-4;
    p = x2 * p + -2.954_600_2e-3;
    p = x2 * p + -1.609_603_3e-2;
    let p = x * p;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_4e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

wide_on_x86! {
gelu_erf_baseline =>
/// GELU with the exact (erf) form, as BERT and multilingual-e5 use.
pub fn gelu_erf(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}
}

wide_on_x86! {
rms_norm_baseline =>
/// In place: each row of `x` (length `w.len()`) <- row / rms(row) * w. Gemma's GGUF norm weights already carry
/// the `+1` of its `(1 + w)` form, so this is the plain RMSNorm.
pub fn rms_norm(x: &mut [f32], w: &[f32], eps: f32) {
    let h = w.len();
    for row in x.chunks_exact_mut(h) {
        let ms = dot(row, row) / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for (v, wi) in row.iter_mut().zip(w) {
            *v *= inv * wi;
        }
    }
}
}

wide_on_x86! {
gelu_tanh_baseline =>
/// GELU, tanh approximation (Gemma's `gelu_pytorch_tanh`), in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + tanh(C * (u + 0.044_715 * u * u * u)));
    }
}
}

/// tanh(z) = sign(z) (1 - e) / (1 + e) with e = e^(-2|z|): no libm call (`f32::tanh` is a scalar `tanhf` on
/// wasm32), so GELU over every FFN activation vectorises. Absolute error ~2e-7.
#[inline]
pub fn tanh(z: f32) -> f32 {
    let e = exp_neg(-2.0 * z.abs());
    let r = (1.0 - e) / (1.0 + e);
    if z < 0.0 {
        -r
    } else {
        r
    }
}

/// e^x for x <= 0 (softmax after subtracting the max): 2^n * 2^f with n the nearest integer to x log2 e and
/// a degree-6 Taylor polynomial for 2^f on [-0.5, 0.5] (relative error ~2e-7); zero below -87, NaN for NaN.
/// Branch-free, and n's bits are read off the rounding sum instead of converted (`floor` and float-to-int casts
/// are libm calls or scalar code on baseline x86_64 and wasm32), so loops over it vectorise.
#[inline]
pub fn exp_neg(x: f32) -> f32 {
    let xc = if x < -87.0 { -87.0 } else { x };
    let t = xc * std::f32::consts::LOG2_E;
    let r = t + ROUND_SHIFT; // round_nearest's first half: r's last mantissa bits hold n (|n| < 2^22)
    let n = r - ROUND_SHIFT;
    let f = t - n;
    let p = 1.0
        + f * (0.693_147_2
            + f * (0.240_226_5
                + f * (0.055_504_11
                    + f * (0.009_618_129 + f * (0.001_333_355_8 + f * 0.000_154_035_3)))));
    let two_n = f32::from_bits(
        r.to_bits()
            .wrapping_sub(ROUND_SHIFT.to_bits())
            .wrapping_add(127)
            << 23,
    );
    if x < -87.0 {
        0.0
    } else {
        two_n * p
    }
}

/// Round to nearest, ties to even (`f32::round_ties_even`), for |y| <= 2^22: adding 1.5 * 2^23 pushes the
/// fraction out of the mantissa, so the FPU's default rounding does the work; floats are not reassociated, so the
/// compiler keeps both adds. Plain vector adds, where `f32::round` is a scalar libm call on wasm32 and baseline
/// x86_64.
#[inline(always)]
pub fn round_nearest(y: f32) -> f32 {
    (y + ROUND_SHIFT) - ROUND_SHIFT
}

/// 1.5 * 2^23: any |y| <= 2^22 plus this lands where the float's spacing is exactly 1 (see `round_nearest`).
const ROUND_SHIFT: f32 = 12_582_912.0;

/// Exactly `y as i32`, written so that loops over it vectorise on every target: wasm32's saturating cast is one
/// instruction (`i32x4.trunc_sat_f32x4_s`), but on baseline x86_64 LLVM scalarises the cast's saturation and NaN
/// handling lane by lane, so there it is spelled out as selects around an unchecked conversion.
#[inline(always)]
pub fn to_i32(y: f32) -> i32 {
    #[cfg(target_arch = "wasm32")]
    return y as i32;
    #[cfg(not(target_arch = "wasm32"))]
    {
        const TWO_31: f32 = 2_147_483_648.0;
        const BELOW_TWO_31: f32 = 2_147_483_520.0; // the largest f32 below 2^31
        let c = if y.is_nan() {
            0.0
        } else if y < -TWO_31 {
            -TWO_31
        } else if y > BELOW_TWO_31 {
            BELOW_TWO_31
        } else {
            y
        };
        // SAFETY: c is finite and inside i32's range (made so just above)
        let r: i32 = unsafe { c.to_int_unchecked() };
        if y >= TWO_31 {
            i32::MAX
        } else {
            r
        }
    }
}

/// max of a slice (-inf when empty; NaNs skipped), with eight independent lanes and comparisons (`f32::max` is a
/// libm call on wasm32).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    tail.iter()
        .chain(&acc)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

wide_on_x86! {
softmax_baseline =>
/// In place softmax of one row: max, exponentials and sum as three simple loops, each of which vectorises.
pub fn softmax(x: &mut [f32]) {
    let max = max(x);
    for v in x.iter_mut() {
        *v = exp_neg(*v - max);
    }
    let inv = 1.0 / sum(x);
    for v in x.iter_mut() {
        *v *= inv;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_ref(x: f64) -> f64 {
        // Abramowitz-Stegun 7.1.26 is too coarse; integrate the series instead (|x| <= 4 converges fast enough)
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        while term.abs() > 1e-17 || n < 5.0 {
            sum += term / (2.0 * n + 1.0);
            n += 1.0;
            term *= -x * x / n;
            if n > 200.0 {
                break;
            }
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn layer_norm_matches_f64_for_any_width() {
        for h in [1usize, 7, 8, 13, 384, 1000] {
            let x: Vec<f32> = (0..2 * h)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect();
            let r: Vec<f32> = (0..2 * h).map(|i| ((i * 11 % 17) as f32) / 3.0).collect();
            let w: Vec<f32> = (0..h).map(|i| 1.0 + i as f32 / h as f32).collect();
            let b: Vec<f32> = (0..h).map(|i| i as f32 / 100.0).collect();
            let mut y = x.clone();
            add_layer_norm(&mut y, Some(&r), &w, &b, 1e-5, h);
            for t in 0..2 {
                let row: Vec<f64> = (0..h)
                    .map(|i| (x[t * h + i] + r[t * h + i]) as f64)
                    .collect();
                let mean = row.iter().sum::<f64>() / h as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
                for i in 0..h {
                    let want = (row[i] - mean) / (var + 1e-5).sqrt() * w[i] as f64 + b[i] as f64;
                    assert!((y[t * h + i] as f64 - want).abs() < 1e-4, "h={h} i={i}");
                }
            }
        }
    }

    #[test]
    fn erf_is_accurate() {
        for i in -300..=300 {
            let x = i as f32 / 100.0;
            assert!((erf(x) as f64 - erf_ref(x as f64)).abs() < 2e-6, "erf({x})");
        }
        assert!((erf(10.0) - 1.0).abs() < 1e-6 && (erf(-10.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn exp_is_accurate() {
        for i in 0..=870 {
            let x = -(i as f32) / 10.0;
            let (got, want) = (exp_neg(x) as f64, (x as f64).exp());
            // f32 rounding of x * log2(e) grows with |x|; far-negative scores only matter as ~0 in a softmax
            let tol = if x > -10.0 { 1e-6 } else { 1e-5 };
            assert!(
                (got - want).abs() <= tol * want + 1e-38,
                "exp({x}) = {got} vs {want}"
            );
        }
        assert_eq!(exp_neg(-100.0), 0.0);
        assert!(exp_neg(f32::NAN).is_nan());
        for y in [
            0.0f32,
            1.5,
            -2.5,
            -0.7,
            3e9,
            -3e9,
            2_147_483_520.0,
            -2_147_483_648.0,
            2_147_483_648.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ] {
            assert_eq!(to_i32(y), y as i32, "{y}");
        }
    }

    /// The dispatch picks the AVX2 copies on this CPU; each must give the baseline copy's bits.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_copies_compute_the_baseline_bits() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 here: only the baseline copies run");
            return;
        }
        let data = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 97.0)
                .collect()
        };
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        type InPlace = fn(&mut [f32]);
        let elementwise: [(InPlace, InPlace, &str); 3] = [
            (gelu_erf, gelu_erf_baseline, "gelu_erf"),
            (gelu_tanh, gelu_tanh_baseline, "gelu_tanh"),
            (softmax, softmax_baseline, "softmax"),
        ];
        for len in [1usize, 7, 8, 13, 64, 100, 384, 1000] {
            for (op, baseline, name) in elementwise {
                let (mut a, mut b) = (data(len, 1), data(len, 1));
                op(&mut a);
                baseline(&mut b);
                assert_eq!(bits(&a), bits(&b), "{name}, {len}");
            }
            let (w, bias, r) = (data(len, 2), data(len, 3), data(2 * len, 4));
            let (mut a, mut b) = (data(2 * len, 5), data(2 * len, 5));
            add_layer_norm(&mut a, Some(&r), &w, &bias, 1e-5, len);
            add_layer_norm_baseline(&mut b, Some(&r), &w, &bias, 1e-5, len);
            assert_eq!(bits(&a), bits(&b), "add_layer_norm, {len}");
            let (mut a, mut b) = (data(2 * len, 6), data(2 * len, 6));
            rms_norm(&mut a, &w, 1e-6);
            rms_norm_baseline(&mut b, &w, 1e-6);
            assert_eq!(bits(&a), bits(&b), "rms_norm, {len}");
        }
        for &(m, k, n) in &[(1, 1, 8), (5, 32, 64), (13, 64, 32), (7, 5, 11)] {
            let (a, b) = (data(m * k, 7), data(k * n, 8));
            let (mut x, mut y) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul(&a, &b, m, k, n, &mut x);
            matmul_baseline(&a, &b, m, k, n, &mut y);
            assert_eq!(bits(&x), bits(&y), "matmul {m}x{k}x{n}");
        }
    }

    #[test]
    fn matmul_matches_f64() {
        for &(m, k, n) in &[
            (1, 1, 8),
            (3, 32, 16),
            (4, 7, 8),
            (9, 32, 64),
            (13, 64, 32),
            (5, 3, 11),
            (2, 5, 3),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 11 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let mut out = vec![f32::NAN; m * n];
            matmul(&a, &b, m, k, n, &mut out);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|d| a[i * k + d] as f64 * b[d * n + j] as f64)
                        .sum();
                    assert!(
                        (out[i * n + j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{m}x{k}x{n} [{i}][{j}]"
                    );
                }
            }
        }
    }

    #[test]
    fn tanh_and_softmax_are_accurate() {
        for i in -2000..=2000 {
            let z = i as f32 / 200.0;
            let (got, want) = (tanh(z) as f64, (z as f64).tanh());
            assert!((got - want).abs() < 3e-7, "tanh({z}) = {got} vs {want}");
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(-30.0), -1.0);
        for len in [1usize, 7, 8, 13, 64] {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 29 % 31) as f32 - 15.0) / 2.0)
                .collect();
            let mut y = x.clone();
            softmax(&mut y);
            let m = x.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
            let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (got, v) in y.iter().zip(&x) {
                let want = (*v as f64 - m).exp() / s;
                assert!(
                    (*got as f64 - want).abs() < 1e-6 * want + 1e-9,
                    "len {len}: {got} vs {want}"
                );
            }
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(
            max(&[1.0, f32::NAN, 3.0, -2.0, 0.5, 0.0, 2.0, 2.5, 2.9]),
            3.0
        );
    }

    #[test]
    fn rms_norm_and_gelu_tanh() {
        let mut x = vec![3.0f32, -4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        rms_norm(&mut x, &[1.0, 2.0, 1.0, 1.0], 0.0);
        // rms of the first row is 2.5
        assert!(
            (x[0] - 1.2).abs() < 1e-6 && (x[1] + 3.2).abs() < 1e-6 && (x[4] - 1.0).abs() < 1e-6
        );
        let mut g = vec![-3.0f32, 0.0, 1.0, 3.0];
        gelu_tanh(&mut g);
        for (got, want) in g.iter().zip([-0.003_637_4f32, 0.0, 0.841_192, 2.996_363]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn softmax_and_layer_norm() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6 && x[3] == 0.0 && x[2] > x[1]);
        let mut y: Vec<f32> = (0..16).map(|i| i as f32).collect();
        add_layer_norm(&mut y, None, &[1.0; 16], &[0.0; 16], 1e-12, 16);
        assert!(sum(&y).abs() < 1e-4);
        assert!((dot(&y, &y) / 16.0 - 1.0).abs() < 1e-4);
    }
}
