// Micro-benchmark: this machine's single-thread wasm simd128 throughput (Node/V8), to say how far the classifier is
// from the limit. int8 path = i16x8 widened bytes into i32x4.dot_i16x8_s (what candle's Q8_0/Q4_0 kernels use,
// 8 multiply-adds per instruction); f32 path = f32x4.mul + f32x4.add (4 multiply-adds per pair).
// Eight independent accumulator chains hide instruction latency. Usage: node bench/simd-peak.mjs
import binaryen from 'binaryen';

const chains = 8;
const locals = (p) => Array.from({ length: chains }, (_, i) => `(local $${p}${i} v128)`).join(' ');
const wat = `(module
  (func (export "dot") (param $n i32) (result i32) ${locals('a')} (local $y v128)
    (local.set $y (v128.const i16x8 3 1 4 1 5 9 2 6))
    ${Array.from({ length: chains }, (_, i) => `(local.set $a${i} (v128.const i32x4 ${i} 1 2 3))`).join('\n    ')}
    (loop $l
      ${Array.from({ length: chains }, (_, i) => `(local.set $a${i} (i32x4.add (local.get $a${i}) (i32x4.dot_i16x8_s (local.get $a${i}) (local.get $y))))`).join('\n      ')}
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (i32x4.extract_lane 0 (i32x4.add ${Array.from({ length: chains - 1 }, (_, i) => `(i32x4.add (local.get $a${i})`).join(' ')} (local.get $a${chains - 1})${')'.repeat(chains - 1)} (local.get $a0))))
  (func (export "fma") (param $n i32) (result f32) ${locals('f')} (local $m v128) (local $c v128)
    (local.set $m (v128.const f32x4 0.999999 0.999999 0.999999 0.999999))
    (local.set $c (v128.const f32x4 0.001 0.001 0.001 0.001))
    ${Array.from({ length: chains }, (_, i) => `(local.set $f${i} (v128.const f32x4 ${i}.5 1 2 3))`).join('\n    ')}
    (loop $l
      ${Array.from({ length: chains }, (_, i) => `(local.set $f${i} (f32x4.add (f32x4.mul (local.get $f${i}) (local.get $m)) (local.get $c)))`).join('\n      ')}
      (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (f32x4.extract_lane 0 (f32x4.add ${Array.from({ length: chains - 1 }, (_, i) => `(f32x4.add (local.get $f${i})`).join(' ')} (local.get $f${chains - 1})${')'.repeat(chains - 1)} (local.get $f0))))
)`;

const mod = binaryen.parseText(wat);
mod.setFeatures(binaryen.Features.SIMD128 | binaryen.Features.MVP);
if (!mod.validate()) throw new Error('invalid wat');
const { instance } = await WebAssembly.instantiate(mod.emitBinary());
const { dot, fma } = instance.exports;

function rate(fn, macsPerIter) {
  fn(1e6); // tier up
  const runs = [];
  for (let r = 0; r < 7; r++) {
    const n = 2e7;
    const t = performance.now();
    fn(n);
    runs.push((n * macsPerIter) / ((performance.now() - t) / 1e3) / 1e9);
  }
  runs.sort((a, b) => a - b);
  return runs[3];
}

const report = {
  runtime: `node ${process.version}`,
  int8_dot_gmacs: rate(dot, chains * 8),
  f32_gmacs: rate(fma, chains * 4),
};
console.log(JSON.stringify(report, null, 2));
