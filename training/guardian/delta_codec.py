"""The committed form of the guardian's fine-tuning delta, `delta.q8diff.xz`: `delta.gguf` with each Q8_0 tensor
that the base model also has replaced by its difference from what the base predicts, then xz-compressed.

Why: the raw int8 weights of a fine-tuned block look random to a compressor, but a fine-tune moves most of them by
-1..+1 from the base's, so their differences compress. That keeps a whole-decoder delta under a git host's 100 MB
per file and the tracked tree small enough to travel to a device machine (64 MiB). Decoding is exact: it rebuilds
delta.gguf byte for byte (checked against the manifest's `gguf_sha256`), so model.gguf stays the very file that was
evaluated. numpy + gguf + the standard library's lzma only.

Two encodings (the manifest's `delta.encoding` says which; `decode` reads both):
- v1 (`ENCODING_V1`): per Q8_0 block, fp16 scale XOR the base's, int8 values minus the base's row-scaled Q8_0 (mod
  256), blocks left interleaved; xz preset 6. v1.1's 35.8 MB -> 13.5 MB; the whole-decoder v1.2: 107 -> 33.2 MB.
- v2 (`ENCODING`, written now): the same scale XOR, but the int8 values minus the base re-quantized at the delta's
  own row scale (nearly every row's scale moved a little, and a moved scale shifts every value of the row), and each
  tensor stored as all its scales, then all its values (interleaved scales break the compressor's byte statistics);
  xz with no literal context (the residuals are near-i.i.d. small integers). v1.2: 107 -> 30.3 MB, near the
  residuals' order-0 entropy (2.37 bits per weight).

    python training/guardian/delta_codec.py encode models/guardian/delta.gguf models/guardian/delta.q8diff.xz
    python training/guardian/delta_codec.py decode models/guardian/delta.q8diff.xz models/guardian/delta.gguf
"""
import argparse
import lzma
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.common.quant import quantize_q8_0_row  # noqa: E402
from training.guardian.assemble import dequantized  # noqa: E402

ENCODING_V1 = "delta.gguf; Q8_0 tensors the base also has as byte differences from the base's row-scaled Q8_0 " \
              "(scales XOR, int8 values minus mod 256); xz"
ENCODING = "v2: delta.gguf; Q8_0 tensors the base also has as scales XOR the base's row-scaled Q8_0, then int8 " \
           "values minus the base re-quantized at the delta's row scale (mod 256); xz lc0"
XZ_FILTERS = [{"id": 0x21, "preset": 6, "lc": 0, "lp": 0, "pb": 0}]  # LZMA2
BLOCK = 34  # Q8_0: fp16 scale + 32 int8


def base_tensors(base_path):
    """name -> the base's tensor dequantized to fp32 (what the delta's bytes are predicted from), or None."""
    import gguf
    tensors = {t.name: t for t in gguf.GGUFReader(str(base_path)).tensors}

    def weights(name):
        t = tensors.get(name)
        return None if t is None else dequantized(t)
    return weights


def base_q8(base_path):
    """name -> the base's tensor in the shipped quantization, or None (v1's reference)."""
    weights = base_tensors(base_path)

    def q8(name):
        w = weights(name)
        return None if w is None else quantize_q8_0_row(w)[0]
    return q8


def q8_spans(gguf_path):
    """(name, byte offset, byte count) of each Q8_0 tensor in a GGUF file."""
    import gguf
    r = gguf.GGUFReader(str(gguf_path))
    return [(t.name, int(t.data_offset), int(t.n_bytes)) for t in r.tensors
            if t.tensor_type == gguf.GGMLQuantizationType.Q8_0]


def transform(buf, spans, base, sign):
    """v1: replace each span of `buf` by its difference from (sign -1) or its sum with (sign +1) the base's bytes."""
    for name, off, n in spans:
        b = base(name)
        if b is None:
            continue  # not in the base: stored as is
        b = np.ascontiguousarray(b, dtype=np.uint8).reshape(-1, BLOCK)
        x = np.frombuffer(bytes(buf[off:off + n]), dtype=np.uint8).reshape(-1, BLOCK)
        if x.shape != b.shape:
            sys.exit(f"{name}: delta has {x.shape[0]} Q8_0 blocks, the base {b.shape[0]}")
        out = np.empty_like(x)
        out[:, :2] = x[:, :2] ^ b[:, :2]
        out[:, 2:] = x[:, 2:] - b[:, 2:] if sign < 0 else x[:, 2:] + b[:, 2:]  # uint8: wraps mod 256
        buf[off:off + n] = out.tobytes()


def predicted(w, scales):
    """The base's weights `w` quantized at the given fp16 row scales: the v2 prediction of each int8 value."""
    s = scales.astype(np.float32)
    return np.clip(np.rint(w / np.where(s == 0, 1, s)[:, None]), -127, 127).astype(np.int8).view(np.uint8)


def transform_v2(buf, spans, base, encoding):
    """v2 in place: (encoding) interleaved Q8_0 blocks -> scales XOR base, then residuals; (decoding) the inverse."""
    for name, off, n in spans:
        w = base(name)
        if w is None:
            continue  # not in the base: stored as is
        rows, k = w.shape
        if n != rows * k // 32 * BLOCK:
            sys.exit(f"{name}: delta has {n} bytes of Q8_0, the base's shape {w.shape} needs {rows * k // 32 * BLOCK}")
        ref = quantize_q8_0_row(w)[0].reshape(rows, k // 32, BLOCK)[:, :, :2]
        x = np.frombuffer(bytes(buf[off:off + n]), dtype=np.uint8)
        if encoding:
            x = x.reshape(rows, k // 32, BLOCK)
            scales = x[:, :, :2]
            residual = x[:, :, 2:].reshape(rows, k) - predicted(w, scales[:, 0].copy().view(np.float16)[:, 0])
            buf[off:off + n] = (scales ^ ref).tobytes() + residual.tobytes()
        else:
            scales = x[:rows * k // 32 * 2].reshape(rows, k // 32, 2) ^ ref
            residual = x[rows * k // 32 * 2:].reshape(rows, k)
            values = residual + predicted(w, scales[:, 0].copy().view(np.float16)[:, 0])  # uint8: wraps mod 256
            out = np.empty((rows, k // 32, BLOCK), dtype=np.uint8)
            out[:, :, :2], out[:, :, 2:] = scales, values.reshape(rows, k // 32, 32)
            buf[off:off + n] = out.tobytes()


def encode(delta_gguf, out, base_path):
    buf = bytearray(Path(delta_gguf).read_bytes())
    transform_v2(buf, q8_spans(delta_gguf), base_tensors(base_path), True)
    Path(out).write_bytes(lzma.compress(bytes(buf), format=lzma.FORMAT_XZ, filters=XZ_FILTERS))


def decode(packed, out, base_path, encoding=ENCODING):
    buf = bytearray(lzma.decompress(Path(packed).read_bytes()))
    # the GGUF header is untouched by either encoding: read the tensor spans from the decompressed bytes
    with tempfile.NamedTemporaryFile(suffix=".gguf") as tmp:
        tmp.write(buf)
        tmp.flush()
        spans = q8_spans(tmp.name)
    if encoding == ENCODING_V1:
        transform(buf, spans, base_q8(base_path), +1)
    elif encoding == ENCODING:
        transform_v2(buf, spans, base_tensors(base_path), False)
    else:
        sys.exit(f"{packed}: unknown delta encoding {encoding!r}")
    Path(out).write_bytes(bytes(buf))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=("encode", "decode"))
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--base", help="base GGUF (default: the pinned PyPI package)")
    ap.add_argument("--v1", action="store_true", help="decode: the file is in the first encoding")
    a = ap.parse_args()
    if a.base:
        base = a.base
    else:
        from training.common.assets import gemma_gguf
        base = gemma_gguf()
    if a.op == "encode":
        encode(a.src, a.dst, base)
    else:
        decode(a.src, a.dst, base, ENCODING_V1 if a.v1 else ENCODING)
    print(f"{a.op}: {a.src} ({Path(a.src).stat().st_size / 1e6:.1f} MB) -> {a.dst} "
          f"({Path(a.dst).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
