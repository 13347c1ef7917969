"""The committed form of the guardian's fine-tuning delta, `delta.q8diff.xz`: `delta.gguf` with each Q8_0 tensor
that the base model also has replaced by its byte difference from the base's own row-scaled Q8_0 quantization
(the fp16 scales XOR-ed, the int8 values subtracted mod 256), then xz-compressed.

Why: the raw int8 weights of a fine-tuned block look random to a compressor, but a fine-tune moves most of them by
-1..+1 from the base's, so their differences compress (v1.1: 35.6 MB of delta.gguf -> 12.7 MB). That keeps a
whole-decoder delta under a git host's 100 MB per file and the tracked tree small enough to travel to a device
machine. Decoding is exact: it rebuilds delta.gguf byte for byte (checked against the manifest's `gguf_sha256`),
so model.gguf stays the very file that was evaluated. numpy + gguf + the standard library's lzma only.

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

ENCODING = "delta.gguf; Q8_0 tensors the base also has as byte differences from the base's row-scaled Q8_0 " \
           "(scales XOR, int8 values minus mod 256); xz"
BLOCK = 34  # Q8_0: fp16 scale + 32 int8


def base_q8(base_path):
    """name -> the base's tensor in the shipped quantization (what the delta's bytes are taken against), or None."""
    import gguf
    tensors = {t.name: t for t in gguf.GGUFReader(str(base_path)).tensors}

    def q8(name):
        t = tensors.get(name)
        return None if t is None else quantize_q8_0_row(dequantized(t))[0]
    return q8


def q8_spans(gguf_path):
    """(name, byte offset, byte count) of each Q8_0 tensor in a GGUF file."""
    import gguf
    r = gguf.GGUFReader(str(gguf_path))
    return [(t.name, int(t.data_offset), int(t.n_bytes)) for t in r.tensors
            if t.tensor_type == gguf.GGMLQuantizationType.Q8_0]


def transform(buf, spans, base, sign):
    """Replace each span of `buf` by its difference from (sign -1) or its sum with (sign +1) the base's bytes."""
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


def encode(delta_gguf, out, base_path):
    buf = bytearray(Path(delta_gguf).read_bytes())
    transform(buf, q8_spans(delta_gguf), base_q8(base_path), -1)
    Path(out).write_bytes(lzma.compress(bytes(buf), preset=6))


def decode(packed, out, base_path):
    buf = bytearray(lzma.decompress(Path(packed).read_bytes()))
    # the GGUF header is untouched by the encoding: read the tensor spans from the decompressed bytes
    with tempfile.NamedTemporaryFile(suffix=".gguf") as tmp:
        tmp.write(buf)
        tmp.flush()
        spans = q8_spans(tmp.name)
    transform(buf, spans, base_q8(base_path), +1)
    Path(out).write_bytes(bytes(buf))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=("encode", "decode"))
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--base", help="base GGUF (default: the pinned PyPI package)")
    a = ap.parse_args()
    if a.base:
        base = a.base
    else:
        from training.common.assets import gemma_gguf
        base = gemma_gguf()
    (encode if a.op == "encode" else decode)(a.src, a.dst, base)
    print(f"{a.op}: {a.src} ({Path(a.src).stat().st_size / 1e6:.1f} MB) -> {a.dst} "
          f"({Path(a.dst).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
