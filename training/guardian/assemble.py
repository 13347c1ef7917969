"""Build models/guardian/model.gguf from the PyPI base model and the committed fine-tuning delta.

The shipped guardian is ~136 MB, over what a git host takes per file, and most of it is the untouched base model.
So git holds the delta (what fine-tuning changed: the top blocks, the final norm and our special tokens' embedding
rows; already in the shipped quantization; plus the kept vocabulary ids) as `delta.q8diff.xz`, which this script
first decodes to `delta.gguf` (delta_codec.py: exact, sha256-checked), and then it rebuilds the full file: base tensors are dequantized, sliced to the kept vocabulary and re-quantized exactly as `export.py`
does, delta tensors are copied byte for byte. The result must match the sha256 in manifest.json, so every machine
runs the very model that was evaluated. It also expands the committed `tokenizer.json.xz` (sha256-checked). Needs
numpy + gguf only (no torch).

    python training/guardian/assemble.py            # idempotent: does nothing when model.gguf already matches
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.common.assets import sha256  # noqa: E402
from training.common.quant import quantize_q8_0_row  # noqa: E402

MODEL_DIR = ROOT / "models/guardian"
META_INT = {"context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count",
            "attention.head_count_kv", "attention.key_length", "attention.value_length",
            "attention.sliding_window", "attention.sliding_window_pattern"}
META_FLOAT = {"attention.layer_norm_rms_epsilon", "rope.freq_base", "rope.local_freq_base"}


def field(reader, key):
    import gguf
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode()
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        return [f.parts[i].tolist()[0] for i in f.data]
    return f.parts[f.data[0]].tolist()[0]


def dequantized(tensor):
    import gguf
    a = gguf.quants.dequantize(np.array(tensor.data), tensor.tensor_type)
    return np.ascontiguousarray(a, dtype=np.float32).reshape([int(d) for d in reversed(tensor.shape.tolist())])


def write_model(out, base_path, delta_path):
    """base GGUF + delta GGUF -> the runtime's GGUF (all 2-D tensors row-scaled Q8_0, the rest F32)."""
    import gguf
    from gguf import GGMLQuantizationType as T
    base, delta = gguf.GGUFReader(str(base_path)), gguf.GGUFReader(str(delta_path))
    kept = np.array(field(delta, "slm_guard.kept_ids"), dtype=np.int64)
    special_ids = field(delta, "slm_guard.special_ids")
    d_tensors = {t.name: t for t in delta.tensors}
    w = gguf.GGUFWriter(str(out), "gemma3")
    for key in delta.fields:
        short = key.removeprefix("gemma3.")
        if short in META_INT:
            w.add_uint32(key, int(field(delta, key)))
        elif short in META_FLOAT:
            w.add_float32(key, float(field(delta, key)))
        elif key.startswith("slm_guard.") and key not in ("slm_guard.kept_ids", "slm_guard.special_ids"):
            v = field(delta, key)
            w.add_uint32(key, v) if isinstance(v, int) else w.add_string(key, str(v))
    tensors = {}
    for t in base.tensors:
        if t.name in d_tensors:
            continue
        v = dequantized(t)
        if t.name == "token_embd.weight":
            v[special_ids] = dequantized(d_tensors["special_rows"])
            v = v[kept]
        tensors[t.name] = v
    for name in sorted(set(tensors) | set(d_tensors) - {"special_rows"}):
        if name in d_tensors:
            t = d_tensors[name]  # quantized data arrives as (rows, bytes per row): the writer infers the shape
            w.add_tensor(name, np.array(t.data), raw_dtype=t.tensor_type if t.tensor_type != T.F32 else None)
        elif tensors[name].ndim == 2:
            w.add_tensor(name, quantize_q8_0_row(tensors[name])[0], raw_dtype=T.Q8_0)
        else:
            w.add_tensor(name, tensors[name])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def delta_gguf(d, manifest):
    """models/guardian/delta.gguf, decoded from the committed `delta.q8diff.xz` when it is missing or stale
    (training/guardian/delta_codec.py); an older manifest names delta.gguf itself. Checked by sha256 either way."""
    entry, path = manifest["delta"], d / "delta.gguf"
    if entry["file"] == "delta.gguf":
        if sha256(path) != entry["sha256"]:
            sys.exit(f"{path}: sha256 does not match manifest.json (tampered or truncated)")
        return path
    if path.is_file() and sha256(path) == entry["gguf_sha256"]:
        return path
    packed = d / entry["file"]
    if not packed.is_file() or sha256(packed) != entry["sha256"]:
        sys.exit(f"{packed}: missing, or its sha256 does not match manifest.json (tampered or truncated)")
    from training.common.assets import gemma_gguf
    from training.guardian.delta_codec import ENCODING_V1, decode
    tmp = path.with_suffix(".tmp")
    decode(packed, tmp, gemma_gguf(), entry.get("encoding", ENCODING_V1))
    if sha256(tmp) != entry["gguf_sha256"]:
        tmp.unlink()
        sys.exit(f"{packed} decoded to a delta.gguf whose sha256 is not the manifest's: base package or numpy/gguf "
                 f"versions differ from the export's")
    tmp.replace(path)
    print(f"{path}: decoded from {packed.name} and verified")
    return path


def tokenizer_json(d, manifest):
    """models/guardian/tokenizer.json, expanded from the committed `tokenizer.json.xz` when it is missing or stale
    (training/common/packed.py; checked against the manifest's sha256 either way)."""
    from training.common.packed import expand
    expand(d, "tokenizer.json", manifest["files"]["tokenizer.json"]["sha256"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=str(MODEL_DIR))
    a = ap.parse_args()
    d = Path(a.dir)
    manifest = json.loads((d / "manifest.json").read_text())
    tokenizer_json(d, manifest)
    delta = delta_gguf(d, manifest)
    want = manifest["files"]["model.gguf"]["sha256"]
    out = d / "model.gguf"
    if out.is_file() and sha256(out) == want:
        print(f"{out}: up to date")
        return
    from training.common.assets import gemma_gguf
    base = gemma_gguf()
    tmp = out.with_suffix(".tmp")
    write_model(tmp, base, delta)
    got = sha256(tmp)
    if got != want:
        tmp.unlink()
        sys.exit(f"assembled model.gguf has sha256 {got}, manifest says {want}: base package or numpy/gguf "
                 f"versions differ from the export's")
    tmp.replace(out)
    print(f"{out}: assembled and verified ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
