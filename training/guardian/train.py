"""Fine-tune Gemma 3 270M into the guardian (classify / respond / force formats of `spec.py`), resumable.

CPU recipe (the default; it is also what a GPU runs, only faster): the embedding and the lower layers stay frozen
and run without gradients; the top `--train-layers` blocks, the final norm and the output rows of our 14 special
tokens are trained. The loss only looks at the tokens that matter: a classify example is scored over
{<|safe|>, <|unsafe|>, categories, <eos>}, a response over the pruned Korean + English vocabulary (`vocab.py`),
so no 262k-way softmax is ever computed. bf16 autocast halves the matmul time on some CPUs and is several times
slower on others (emulated on AVX2; even an AVX-512 BF16 Xeon ran our steps 1.5x slower), so `use_bf16()` times
both on a layer-sized matmul and picks the faster (`SLM_GUARD_TRAIN_BF16=0|1` overrides). With a CUDA GPU the same
command trains there (`--device`, default `cuda` when torch sees one), always with bf16 autocast; checkpoints hold
CPU tensors either way, so export and evaluation run on the CPU machine.
Each task's loss is a mean over its own target tokens, so the few classify tokens are not drowned by responses.
Big batches (`--batch 64 --chunk-tokens 2048`) run as length-sorted chunks with the gradients accumulated: a
classify query is ~26 tokens and a reply row up to 256, so one padded batch would spend most of its time on pads.

Batches are drawn from a seeded generator per step, so a resumed run sees exactly the batches a straight run would.
Checkpoints (trainable tensors + optimizer) every `--save-every` steps to training/runs/guardian/last.pt; the best
dev checkpoint to best.pt.

    python training/guardian/train.py [--steps 2400] [--train-layers 8]
"""
import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.guardian import spec  # noqa: E402
from training.guardian.gemma3 import encode, load_gguf, load_tokenizer  # noqa: E402

BASE_GGUF = ROOT / "training/.cache/assets/gemma-3-270m-q4_k_m.gguf"
BASE_TOKENIZER = ROOT / "training/.cache/assets/gemma3-tokenizer.json"
DATA = ROOT / "training/data/build/guardian"
RUN = ROOT / "training/runs/guardian"
CLS_IDS = [spec.SAFE, spec.UNSAFE, *spec.CAT_IDS, spec.EOS]
MAX_QUERY, MAX_RESPONSE = 128, 128


def load_rows(path, tok):
    rows = []
    for line in open(path, encoding="utf-8"):
        r = json.loads(line)
        q = encode(tok, r["text"])
        if not q:
            continue
        if r["task"] == "classify":
            prompt, target = spec.classify_prompt(q[:MAX_QUERY]), spec.classify_target(r["unsafe"], r["categories"])
        else:
            resp = tok.encode(r["response"], add_special_tokens=False).ids[:MAX_RESPONSE]
            prompt = spec.respond_prompt(q[:MAX_QUERY], force_safety=r["task"] == "force")
            target = spec.respond_target(resp)
        rows.append({"task": r["task"], "lang": r["lang"], "unsafe": r["unsafe"], "prompt": prompt, "target": target})
    return rows


class Sampler:
    """Per step: `classify_share` of the batch from classify rows, each (lang, unsafe) group equally likely;
    the rest from respond/force rows, uniformly. With hard rows (`hard_cases.py`, marked `hard`), `hard_share`
    of the classify part comes from them instead, uniformly. With `ko_share`, a classify row is Korean with that
    probability (then safe / unsafe equally likely) instead of every language getting the same share: Korean is
    76 % of the classify rows and 91 % of the messages the cascade hands the guardian."""

    def __init__(self, rows, seed, classify_share, hard_share=0.0, ko_share=None):
        self.seed, self.share, self.hard_share, self.ko_share = seed, classify_share, hard_share, ko_share
        groups = {}
        for i, r in enumerate(rows):
            if r.get("hard"):
                key = ("hard",)
            elif r["task"] == "classify":
                key = ("classify", r["lang"], r["unsafe"])
            else:
                key = ("respond",)
            groups.setdefault(key, []).append(i)
        self.cls_groups = [v for k, v in sorted(groups.items()) if k[0] == "classify"]
        self.by_lang = {lang: [v for k, v in sorted(groups.items()) if k[:2] == ("classify", lang)]
                        for lang in ("ko", "en")}
        self.resp = groups.get(("respond",), [])
        self.hard = groups.get(("hard",), [])

    def batch(self, step, size):
        rng = random.Random(self.seed * 1_000_003 + step)
        n_cls = round(size * self.share) if self.resp else size
        n_hard = round(n_cls * self.hard_share) if self.hard else 0
        out = [rng.choice(self.hard) for _ in range(n_hard)]
        if self.ko_share is None:
            out += [rng.choice(rng.choice(self.cls_groups)) for _ in range(n_cls - n_hard)]
        else:
            out += [rng.choice(rng.choice(self.by_lang["ko" if rng.random() < self.ko_share else "en"]))
                    for _ in range(n_cls - n_hard)]
        out += [rng.choice(self.resp) for _ in range(size - n_cls)]
        return out


class Trainable(torch.nn.Module):
    """What the guardian changes on top of the base: output rows of the special tokens (tied, so the export writes
    them into the embedding), the top blocks and the final norm (those live in the model itself)."""

    def __init__(self, model, train_layers):
        super().__init__()
        self.first = model.cfg.layers - train_layers
        ids = sorted(spec.SPECIALS.values())
        self.special_ids = torch.tensor(ids, device=model.token_embd.weight.device)
        self.special_rows = torch.nn.Parameter(model.token_embd.weight[ids].clone())


_HEADS = {}


def heads(tr, vocab_ids):
    """Per task: candidate output ids, id -> column, and where the special rows sit among the candidates."""
    if not _HEADS:
        special = {t: j for j, t in enumerate(sorted(spec.SPECIALS.values()))}  # the order of tr.special_ids
        dev = tr.special_rows.device
        for task, cand in (("classify", CLS_IDS), ("respond", vocab_ids.tolist())):
            loc = [k for k, c in enumerate(cand) if c in special]
            _HEADS[task] = (torch.tensor(cand, device=dev), {c: k for k, c in enumerate(cand)},
                            torch.tensor(loc, device=dev), torch.tensor([special[cand[k]] for k in loc], device=dev))
    return _HEADS


_BF16 = None


def use_bf16(device="cpu"):
    """bf16 autocast where it is faster on this CPU: measured once, forward + backward of a layer-sized matmul."""
    global _BF16
    if torch.device(device).type == "cuda":
        return True
    if _BF16 is None:
        forced = os.environ.get("SLM_GUARD_TRAIN_BF16")
        _BF16 = forced == "1" if forced in ("0", "1") else _bf16_is_faster()
    return _BF16


def _bf16_is_faster():
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False  # emulated: no need to measure
    x = torch.randn(8 * 128, 640)
    w = torch.randn(2048, 640, requires_grad=True)

    def run(autocast):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            (x @ w.t()).float().sum().backward()

    times = {}
    for autocast in (False, True):
        run(autocast)  # warm-up
        t = time.perf_counter()
        for _ in range(5):
            run(autocast)
        times[autocast] = time.perf_counter() - t
    return times[True] < times[False]


def targets_of(rows, idx, lookups):
    """Per task, how many target tokens of these rows the loss counts (pieces outside the task's candidates are
    skipped: dev replies may hold pieces the training text never produced)."""
    n = {}
    for i in idx:
        task = "classify" if rows[i]["task"] == "classify" else "respond"
        n[task] = n.get(task, 0) + sum(t in lookups[task] for t in rows[i]["target"])
    return n


def packed(rows, idx, max_tokens):
    """Split a batch into chunks of rows of similar length, each at most `max_tokens` once padded (a chunk holds
    at least one row). A classify query is ~26 tokens and a reply row up to 256, so padding them together wastes
    most of a step; sorted chunks do the same arithmetic on far fewer pad tokens."""
    order = sorted(idx, key=lambda i: len(rows[i]["prompt"]) + len(rows[i]["target"]))
    chunks, cur = [], []
    for i in order:
        n = len(rows[i]["prompt"]) + len(rows[i]["target"])
        if cur and n * (len(cur) + 1) > max_tokens:  # sorted: n is the chunk's longest row
            chunks.append(cur)
            cur = []
        cur.append(i)
    return chunks + [cur] if cur else chunks


def chunk_loss(model, tr, rows, idx, vocab_ids, autocast):
    """Summed cross-entropy per task over these rows' target tokens (one padded forward pass)."""
    dev = model.output_norm.device
    seqs = [rows[i]["prompt"] + rows[i]["target"] for i in idx]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), spec.PAD, dtype=torch.long)
    pad = torch.zeros((len(seqs), T), dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.tensor(s)
        pad[b, :len(s)] = True
    ids, pad = ids.to(dev), pad.to(dev)
    emb_w = model.token_embd.weight.detach().clone()
    emb_w[tr.special_ids] = tr.special_rows.detach()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
        with torch.no_grad():
            x = model.run_layers(F.embedding(ids, emb_w) * math.sqrt(model.cfg.hidden), 0, tr.first, pad)
        x = model.run_layers(x, tr.first, model.cfg.layers, pad)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + model.cfg.eps) * model.output_norm
    out_w = model.token_embd.weight.detach()
    sums = {}
    for task, (cand, lookup, loc, rows_of_special) in heads(tr, vocab_ids).items():
        pos, tgt = [], []
        for b, i in enumerate(idx):
            r = rows[i]
            if (r["task"] == "classify") != (task == "classify"):
                continue
            start = len(r["prompt"]) - 1
            pos += [(b, start + j) for j in range(len(r["target"]))]
            tgt += r["target"]
        if not pos:
            continue
        hs = h[[p[0] for p in pos], [p[1] for p in pos]]
        w = out_w[cand].clone()
        w[loc] = tr.special_rows[rows_of_special]  # the trained rows of our special tokens
        target = torch.tensor([lookup.get(t, -100) for t in tgt], device=dev)
        sums[task] = F.cross_entropy(hs @ w.T, target, ignore_index=-100, reduction="sum")
    return sums


def batch_loss(model, tr, rows, idx, vocab_ids, autocast=None, max_tokens=0, backward=False):
    """Mean loss per task over its own target tokens in the batch (so the few classify tokens are not drowned by
    replies). `max_tokens` > 0 runs the batch as length-sorted chunks of at most that many padded tokens; with
    `backward`, each chunk's share of the summed task means is back-propagated as soon as it is computed (the
    gradients are those of the whole batch, memory is one chunk's) and the returned losses are detached."""
    if autocast is None:
        autocast = use_bf16(model.output_norm.device)
    hs = heads(tr, vocab_ids)
    counts = targets_of(rows, idx, {task: h[1] for task, h in hs.items()})
    losses = {}
    for chunk in packed(rows, idx, max_tokens) if max_tokens else [list(idx)]:
        sums = chunk_loss(model, tr, rows, chunk, vocab_ids, autocast)
        part = {task: v / max(1, counts[task]) for task, v in sums.items()}
        if backward and part:
            sum(part.values()).backward()
            part = {task: v.detach() for task, v in part.items()}
        for task, v in part.items():
            losses[task] = losses.get(task, 0.0) + v
    return losses


def trainable_state(model, tr):
    """The trained tensors, as CPU copies (a GPU run's checkpoints load on the CPU machine)."""
    state = {"special_ids": tr.special_ids.cpu(), "special_rows": tr.special_rows.detach().cpu().clone(),
             "output_norm": model.output_norm.detach().cpu().clone(), "first": tr.first}
    for i in range(tr.first, model.cfg.layers):
        for k, v in model.blk[i].state_dict().items():
            state[f"blk.{i}.{k}"] = v.cpu().clone()
    return state


def apply_state(model, state):
    """Put trained tensors into a base model (also used by export and eval)."""
    dev = model.output_norm.device
    with torch.no_grad():
        model.token_embd.weight[state["special_ids"].to(dev)] = state["special_rows"].to(dev)
        model.output_norm.copy_(state["output_norm"])
        for i in range(state["first"], model.cfg.layers):
            model.blk[i].load_state_dict({k.split(".", 2)[2]: v for k, v in state.items()
                                          if k.startswith(f"blk.{i}.")})
    return model


def state_from_delta(path):
    """The trained tensors of a delta.gguf as `apply_state` takes them (what export.py wrote, dequantized): lets a
    run start from the shipped guardian instead of the base model, and lets evaluation work without best.pt."""
    import gguf
    from training.guardian.assemble import dequantized, field
    r = gguf.GGUFReader(str(path))
    t = {x.name: torch.from_numpy(dequantized(x).copy()) for x in r.tensors}
    state = {"special_ids": torch.tensor(field(r, "slm_guard.special_ids")), "special_rows": t.pop("special_rows"),
             "output_norm": t.pop("output_norm.weight")}
    layers = sorted({int(n.split(".")[1]) for n in t})
    state["first"] = layers[0]
    for name, v in t.items():
        _, i, n, _ = name.split(".")  # same naming as gemma3.load_gguf
        state[f"blk.{i}.{n}" + (".weight" if n.startswith(("attn_", "ffn_")) and "norm" not in n else "")] = v
    return state


@torch.no_grad()
def dev_loss(model, tr, rows, vocab_ids, n=256):
    tot, cnt = {}, {}
    for s in range(0, min(n, len(rows)), 16):
        for k, v in batch_loss(model, tr, rows, list(range(s, min(s + 16, len(rows)))), vocab_ids).items():
            tot[k] = tot.get(k, 0.0) + float(v)
            cnt[k] = cnt.get(k, 0) + 1
    return {k: tot[k] / cnt[k] for k in tot}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--train-layers", type=int, default=6)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--special-lr", type=float, default=1e-3)
    ap.add_argument("--classify-share", type=float, default=0.6)
    ap.add_argument("--hard", help="extra classify rows the classifier is unsure about (hard_cases.py's hard.jsonl)")
    ap.add_argument("--hard-share", type=float, default=0.5, help="share of the classify part drawn from --hard")
    ap.add_argument("--ko-share", type=float, help="share of the classify rows drawn from Korean (default: each "
                    "language x label group equally likely, i.e. half Korean)")
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (a continuation needs fewer)")
    ap.add_argument("--chunk-tokens", type=int, default=0, help="run each batch as length-sorted chunks of at most "
                    "this many padded tokens (0: one padded batch); same gradients, far less padding in big batches")
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--run", default=str(RUN))
    ap.add_argument("--vocab", default=str(RUN / "vocab.json"))
    ap.add_argument("--init-delta", help="start from this delta.gguf (e.g. models/guardian/delta.gguf: continue the "
                    "shipped guardian) instead of the base model; ignored when resuming from last.pt")
    a = ap.parse_args()
    if a.ko_share is not None and not 0.0 <= a.ko_share <= 1.0:
        ap.error(f"--ko-share {a.ko_share}: a share between 0 and 1")
    data, run = Path(a.data), Path(a.run)
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    run.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(BASE_TOKENIZER)
    vocab_ids = torch.tensor(json.loads(Path(a.vocab).read_text())["ids"])
    t0 = time.time()
    rows = load_rows(data / "train.jsonl", tok)
    if a.hard:
        rows += [{**r, "hard": True} for r in load_rows(Path(a.hard), tok)]
    dev = load_rows(data / "dev.jsonl", tok)
    random.Random(0).shuffle(dev)
    dev_cls = [r for r in dev if r["task"] == "classify"][:192]
    dev_resp = [r for r in dev if r["task"] != "classify"][:64]
    print(f"device {a.device}, bf16 autocast: {use_bf16(a.device)}; data: {len(rows)} train rows, dev {len(dev_cls)}+{len(dev_resp)} ({time.time() - t0:.0f} s)", flush=True)
    model, _ = load_gguf(BASE_GGUF)
    model.requires_grad_(False)
    if a.init_delta and not (run / "last.pt").is_file():
        init = state_from_delta(Path(a.init_delta))
        if init["first"] < model.cfg.layers - a.train_layers:  # fewer is fine: the layers below start at the base
            sys.exit(f"{a.init_delta} trained layers {init['first']}.., more than the top {a.train_layers}: pass "
                     f"--train-layers {model.cfg.layers - init['first']} or more")
        apply_state(model, init)  # before Trainable, which copies the special rows from the embedding
        print(f"initialised from {a.init_delta}", flush=True)
    model.to(a.device)
    tr = Trainable(model, a.train_layers)
    params = [p for i in range(tr.first, model.cfg.layers) for p in model.blk[i].parameters()] + [model.output_norm]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW([{"params": params, "lr": a.lr, "weight_decay": 0.0},
                             {"params": [tr.special_rows], "lr": a.special_lr, "weight_decay": 0.0}])
    sched = lambda s: min(1.0, (s + 1) / max(1, a.warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, a.steps) / a.steps))
    history, step, best = [], 0, float("inf")
    if (run / "last.pt").is_file():
        ck = torch.load(run / "last.pt", weights_only=False, map_location="cpu")
        if ck["args"]["train_layers"] == a.train_layers:
            apply_state(model, ck["state"])
            tr.special_rows.data.copy_(ck["state"]["special_rows"])
            opt.load_state_dict(ck["opt"])
            step, history, best = ck["step"], ck["history"], ck["best"]
            print(f"resumed at step {step}", flush=True)
    sampler = Sampler(rows, a.seed, a.classify_share, a.hard_share, a.ko_share)
    dev_rows = dev_cls + dev_resp
    t_run = time.time()
    while step < a.steps:
        for g, base in zip(opt.param_groups, (a.lr, a.special_lr)):
            g["lr"] = base * sched(step)
        opt.zero_grad()
        losses = batch_loss(model, tr, rows, sampler.batch(step, a.batch), vocab_ids, max_tokens=a.chunk_tokens,
                            backward=True)
        torch.nn.utils.clip_grad_norm_(params + [tr.special_rows], 1.0)
        opt.step()
        step += 1
        history.append({"step": step, **{k: round(v.item(), 4) for k, v in losses.items()}})
        if step % 20 == 0:
            rate = (time.time() - t_run) / max(1, step - (history[0]["step"] - 1))
            print(f"step {step}/{a.steps} " + " ".join(f"{k} {v:.3f}" for k, v in history[-1].items() if k != "step")
                  + f" ({rate:.2f} s/step)", flush=True)
        if step % a.eval_every == 0 or step == a.steps:
            d = dev_loss(model, tr, dev_rows, vocab_ids)
            total = sum(d.values())
            history[-1]["dev"] = d
            print(f"dev at {step}: {d}", flush=True)
            if total < best:
                best = total
                torch.save({"state": trainable_state(model, tr), "step": step, "dev": d, "args": vars(a)},
                           run / "best.pt")
        if step % a.save_every == 0 or step == a.steps:
            torch.save({"state": trainable_state(model, tr), "opt": opt.state_dict(), "step": step,
                        "history": history, "best": best, "args": vars(a)}, run / "last.pt.tmp")
            (run / "last.pt.tmp").replace(run / "last.pt")
    (run / "history.json").write_text(json.dumps(history))
    print(f"done: {step} steps, {(time.time() - t_run) / 60:.1f} min this run", flush=True)


if __name__ == "__main__":
    main()
