"""The reply check: a branch of the shipped classifier that tells harmful guardian replies from harmless ones.
`export` ships it; `fit` and `tune` are the experiments behind it (training/guardian/RUN_NOTES.md, "A reply check
from rated replies"; the shipped numbers: models/classifier/MODEL_CARD.md, "The reply check").

Why: the reply gate (src/reply_gate.rs) asks the classifier whether a guardian reply is unsafe. The classifier's
message verdict was trained on user messages, and a refusal names the request's topic ("I can't help you make a
bomb"), so it flags about half of the harmless replies our readers rated and barely tells the harmful ones apart
(ROC AUC 0.58 and 0.64 on the two rated test sets). A linear head on the frozen encoder (classifier 1.1.0) read
0.72 / 0.74 against the test's second reading; retraining the top 4 layers reads ~0.78 / 0.79 (`tune`).

`export` trains the branch (`classifier.model.ReplyBranch`: copies of the top 4 encoder layers, run on the hidden
states after the 8 layers it shares with the message head, and a one-logit head) on the rated train replies; stores
each retrained weight matrix as the shipped one plus a rank-16 change in two Q8_0 factors (`low_rank`: ~0.5 MB),
and its own biases, layer norms and head; picks the threshold out of fold (`out_of_fold`, `choose_threshold`);
writes models/classifier/model.gguf (every message tensor copied byte for byte), the manifest (label
`reply_unsafe`, threshold, sha256) and reference.json; and writes its measurements into the classifier's card.
Checkpoints (one per fold, and the final branch) under training/runs/reply_head let a rerun resume.

Training sources (label: the reply is harmful), none from the hidden sets:
- `rated-train` (the only one `export` uses): the shipped guardian's raw replies to harmful *train* requests, rated
  by readers (training/guardian/reply_labels/v1.2_train*: `reply_review.py sample`);
- public replies with labels: do-not-answer's six models (en), DICES (en), SQuARe's responses (ko), hh-rlhf
  harmless-base pairs whose chosen reply refuses and rejected one does not, with the Korean translation (`hh_pairs`);
- `guardian`: the guardian's safe training targets (harmless);
- `synthetic`: a target reply's first sentence followed by an offer of what it declined, or a hateful request
  echoed back (harmful), beside the target itself and a safe offer (harmless) (`synthetic_contradictions`).
Test: the two rated folders in `reply_review.RATED` (replies to dev, test and held-back requests), never trained on
and never used for a choice.

Needs training/data/build (`training/data/build.py`, then `training/guardian/data.py`; `export` needs neither) and
the shipped models/classifier; pooled embeddings are cached under training/runs/reply_head, keyed by the encoder.

    python training/classifier/reply_head.py export  # train (5 folds + final, ~30 min on 2 cores), add to
                                                     # models/classifier, measure; resumes from its checkpoints
    python training/classifier/reply_head.py fit     # linear heads on cached pooled embeddings: data mixtures,
                                                     # operating points and a learning curve, beside the classifier
    python training/classifier/reply_head.py tune --top 4 --epochs 3 --sources rated-train [--ranks 8,16,32]
                                                     # the branch on train less a dev split, scored per epoch
                                                     # (and again as low-rank changes)
"""
import argparse
import csv
import gzip
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
RAW = REPO.parent / "shared/data/raw"
MODEL = REPO / "models/classifier"
CACHE = REPO / "training/runs/reply_head"
sys.path.insert(0, str(REPO / "training"))
from classifier.data import collate, tokenizer  # noqa: E402
from classifier.model import LABELS, GuardClassifier  # noqa: E402
from common.normalize import normalize  # noqa: E402
from common.packed import pack  # noqa: E402
from guardian.data import EN_REFUSE, KO_REFUSE, hh_turns, ko_pair  # noqa: E402
from guardian.reply_review import RATED, rated_replies, read_jsonl, roc_auc, train_ratings  # noqa: E402

MAX_LEN = 128


def gguf_labels(r):
    f = r.fields["slm_guard.labels"]
    return [bytes(f.parts[i]).decode() for i in f.data]


def load_classifier(path=MODEL / "model.gguf"):
    """The shipped GGUF, dequantized into the PyTorch twin (the runtime computes the same function), with its reply
    branch where it has one: each retrained weight matrix is the shared layer's plus the stored low-rank change."""
    from gguf import GGUFReader, quants
    r = GGUFReader(str(path))
    cfg = {k: int(r.fields[f"slm_guard.{k}"].parts[-1][0]) for k in
           ("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab")}
    cfg["eps"] = float(r.fields["slm_guard.layer_norm_eps"].parts[-1][0])
    top = int(r.fields["slm_guard.reply_layers"].parts[-1][0]) if "slm_guard.reply_layers" in r.fields else 0
    sd = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        sd[t.name] = torch.from_numpy(np.array(quants.dequantize(t.data, t.tensor_type).reshape(shape),
                                               dtype=np.float32))
    m = GuardClassifier(cfg, n_labels=len(gguf_labels(r)), reply_layers=top)
    start = cfg["layers"] - top
    for j in range(top):
        src, dst = f"reply.encoder.layer.{start + j}.", f"reply.layer.{j}."
        for lin in LINEARS:
            a, b = sd.pop(f"{src}{lin}.delta_a"), sd.pop(f"{src}{lin}.delta_b")
            sd[f"{dst}{lin}.weight"] = sd[f"encoder.layer.{start + j}.{lin}.weight"] + b.T @ a
        for name in [k for k in sd if k.startswith(src)]:
            sd[dst + name[len(src):]] = sd.pop(name)
    for name in [k for k in sd if k.startswith("reply.head.")]:
        sd[name] = sd[name].reshape(m.reply.head.get_parameter(name.split(".")[-1]).shape)
    m.load_state_dict(sd)
    return m.eval()


def message_probs(cls, x):
    """The classifier's message-label probabilities from pooled embeddings (the rows its verdict reads)."""
    with torch.no_grad():
        return torch.sigmoid(cls.head(torch.from_numpy(x))[:, :len(LABELS)]).numpy()


def token_ids(texts):
    """The classifier's token ids of each text's first 128-token window, after slm-guard-v1 normalisation."""
    tok = tokenizer(MODEL / "tokenizer.json", MAX_LEN)
    return [e.ids for e in tok.encode_batch([normalize(t) for t in texts])]


@torch.no_grad()
def embed(model, texts, batch=64):
    """Mean-pooled final hidden states of the first 128-token window of each text, after slm-guard-v1
    normalisation (what the runtime's classifier computes before its heads)."""
    enc = token_ids(texts)
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    out = np.zeros((len(texts), model.cfg["hidden"]), dtype=np.float32)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        ids, mask = collate([enc[i] for i in idx])
        out[idx] = model.pool(model.encode(ids, mask), mask).numpy()
    return out


# ---- data ------------------------------------------------------------------------------------------------------

def row(text, lang, harmful, source):
    return {"text": text.strip(), "lang": lang, "harmful": int(harmful), "source": source}


def do_not_answer():
    rows = []
    with open(RAW / "kunishou__do-not-answer-ja/datasets/data_en.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            for m in ("GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b"):
                rows.append(row(r[f"{m}_response"], "en", r[f"{m}_harmful"] == "1", "do-not-answer"))
    return rows


def dices():
    rows = []
    for name in ("dices_990", "dices_350_crowdsourced", "dices_350_expert"):
        d = json.loads((RAW / f"dmg-illc__JUDGE-BENCH/data/dices/{name}.json").read_text())
        for inst in d["instances"]:
            safe = inst["annotations"]["safety"]["majority_human"]
            if safe in ("Yes", "No"):
                rows.append(row(inst["instance"]["response"], "en", safe == "No", "dices"))
    return rows


def square():
    rows = []
    for rel in ("naver-ai__korean-safety-benchmarks/data/SQuARe/response_test_ood.json",):
        for r in json.loads((RAW / rel).read_text()):
            rows.append(row(r["response"], "ko", r["acceptable?"] != 1, "square"))
    return rows


def last_reply(dialogue):
    turns = [text for who, text in hh_turns(dialogue) if who == "A"]
    return turns[-1] if turns else ""


def hh_pairs():
    """hh-rlhf harmless-base test (en) and its Korean translation: the pairs whose chosen reply refuses and whose
    rejected one does not (the guardian data's refusal patterns). Such a rejected reply went along with a red-team
    request: harmful, or close to it."""
    rows = []
    with gzip.open(RAW / "anthropics__hh-rlhf/harmless-base/test.jsonl.gz", "rt", encoding="utf-8") as f:
        en = [json.loads(line) for line in f]
    with open(RAW / "sionic-ai__Data_Ko_hh-rlhf/ko_harmless_base_test.txt", encoding="utf-8") as f:
        ko = [p for p in map(ko_pair, f) if p]
    for lang, pairs, refusal in (("en", en, EN_REFUSE), ("ko", ko, KO_REFUSE)):
        for p in pairs:
            c, r = last_reply(p["chosen"]), last_reply(p["rejected"])
            if c and r and c != r and refusal.search(c) and not refusal.search(r):
                rows.append(row(r, lang, 1, f"hh-rlhf-{lang}"))
                rows.append(row(c, lang, 0, f"hh-rlhf-{lang}"))
    return rows


def guardian_replies():
    """The guardian's safe training targets (train split only: dev and test requests are what the rated replies
    answer)."""
    seen, rows = set(), []
    for line in open(REPO / "training/data/build/guardian/train.jsonl", encoding="utf-8"):
        r = json.loads(line)
        text = (r.get("response") or "").strip()
        if r["task"] in ("respond", "force") and text and text not in seen:
            seen.add(text)
            rows.append(row(text, r["lang"], 0, "guardian"))
    return rows


ENDS = ".!?\n。！？…"


def sentences(text):
    """Split after each sentence end, as the reply gate does (src/guardian.rs SENTENCE_ENDS)."""
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch in ENDS:
            out.append(cur.strip())
            cur = ""
    if cur.strip():
        out.append(cur.strip())
    return [x for x in out if x]


# The guardian's failure, written down: decline, then offer the very thing it declined (training/guardian/
# reply_labels: "I can't write sexual content. If you're into it, I can help you write it.").
OFFER_SAME = {
    "en": ["If you're into it, I can help you do it.", "But if you really want to, I can walk you through it.",
           "That said, I can still explain how to do it step by step.", "If you want, I can write it for you.",
           'If you still want it, I can help with "{q}".', 'That said, here is how to go about "{q}":'],
    "ko": ["그래도 원하면 방법은 알려 줄게.", "원하면 그 글은 같이 써 볼게.", "그래도 하고 싶다면 단계별로 설명해 드릴게요.",
           "대신 그 방법은 같이 찾아 볼게요.", '그래도 원하면 "{q}" 방법은 알려 줄게.', '대신 "{q}"는 같이 해 볼게요.'],
}
FILLER = {"en": ["It's important to respect everyone.", "Everyone deserves respect."],
          "ko": ["서로를 존중하는 것이 중요합니다.", "모두 존중받아야 해요."]}


def synthetic_contradictions(seed=20261204):
    """From the guardian's train rows only (the rated replies answer dev, test and held-back requests):
    harmful = the target reply's first sentence followed by an offer of what it declined, or a hateful statement
    echoed back (with a platitude); harmless = the target reply itself, and its first sentence followed by a safe
    offer taken from another target reply (so an offer alone is not the signal)."""
    import random
    rng = random.Random(seed)
    rows, later = [], {"ko": [], "en": []}
    train = [json.loads(line) for line in open(REPO / "training/data/build/guardian/train.jsonl", encoding="utf-8")]
    train = [r for r in train if r["task"] == "respond" and r["unsafe"] and (r.get("response") or "").strip()]
    for r in train:
        later[r["lang"]] += sentences(r["response"])[1:]
    for r in train:
        lang, q, ss = r["lang"], r["text"].strip(), sentences(r["response"])
        if not ss or len(q) > 200:
            continue
        rows.append(row(r["response"], lang, 0, "synthetic-contradiction"))
        rows.append(row(f"{ss[0]} {rng.choice(later[lang])}", lang, 0, "synthetic-contradiction"))
        if r.get("kind") in ("statement", "harmful_statement"):
            rows.append(row(f"{q} {rng.choice(FILLER[lang])}", lang, 1, "synthetic-contradiction"))
        else:
            rows.append(row(f"{ss[0]} {rng.choice(OFFER_SAME[lang]).format(q=q)}", lang, 1, "synthetic-contradiction"))
    return rows


def rated_train():
    """The shipped guardian's own replies to harmful train requests, rated by readers (the real failures): every
    packed folder under reply_labels/ except the test sets (`reply_review.train_ratings`)."""
    return [row(r["reply"], r["lang"], bool(r["harmful"]), "rated-train") for r in train_ratings()]


SOURCES = {"do-not-answer": do_not_answer, "dices": dices, "square": square, "hh": hh_pairs,
           "guardian": guardian_replies, "synthetic": synthetic_contradictions,
           "rated-train": rated_train}


def training_rows(names=tuple(SOURCES)):
    """The rows of the named sources, less any reply that is also a test reply."""
    rows = [r for name in names for r in SOURCES[name]() if r["text"]]
    test = {r["text"].strip() for d in RATED for r in rated_replies(d)}
    return [r for r in rows if r["text"] not in test]


def test_rows():
    return [{"text": r["text"], "lang": r["lang"], "harmful": int(bool(r["harmful"])), "source": d.name,
             "rid": f"{d.name}/{r['id']}"} for d in RATED for r in rated_replies(d)]


def second_reading(rows):
    """`rows` relabelled by the blind second reading (reply_review/second_*: the train rounds' prompt, which spells
    out that an offer to do the declined act is harmful; the test folders were rated before it did), or None where
    some row has no second reading."""
    second = {r["rid"]: r["harmful"] for f in sorted((REPO / "training/guardian/reply_review").glob("second_*/second.jsonl.xz"))
              for r in read_jsonl(f)}
    if any(r["rid"] not in second for r in rows):
        return None
    return [{**r, "harmful": int(bool(second[r["rid"]]))} for r in rows]


def encoder_digest(path=MODEL / "model.gguf"):
    """sha256 of every tensor of the message encoder (not the heads, not the reply branch): pooled embeddings stay
    valid when only those change."""
    from gguf import GGUFReader
    h = hashlib.sha256()
    for t in GGUFReader(str(path)).tensors:
        if not t.name.startswith(("head.", "reply.")):
            h.update(t.name.encode())
            h.update(np.ascontiguousarray(t.data).tobytes())
    return h.hexdigest()


def cached(rows, model):
    """Pooled embeddings of `rows`, cached per text digest (a new source costs only its own rows)."""
    path = CACHE / f"embeddings-{encoder_digest()[:12]}.npz"
    store = {}
    if path.is_file():
        z = np.load(path)
        store = dict(zip(z["keys"].tolist(), z["x"]))
    digests = [hashlib.sha256(r["text"].encode()).hexdigest()[:20] for r in rows]
    missing = sorted({(d, r["text"]) for d, r in zip(digests, rows) if d not in store})
    if missing:
        x = embed(model(), [t for _, t in missing])
        store.update({d: v for (d, _), v in zip(missing, x)})
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(path, keys=np.array(list(store)), x=np.stack(list(store.values())))
    return np.stack([store[d] for d in digests])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["export", "fit", "tune"])
    ap.add_argument("--top", type=int, default=4, help="tune: encoder layers trained (the rest stay the shipped ones)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--ranks", default="", help="tune: comma-separated ranks of a low-rank delta to score afterwards")
    ap.add_argument("--sources", default=",".join(SOURCES), help="tune: training sources (comma-separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--version", help="export: the classifier's new version (default: keep the GGUF's)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lazy = {}

    def model():
        if "m" not in lazy:
            lazy["m"] = load_classifier()
        return lazy["m"]

    test = test_rows()
    if a.cmd == "export":
        return export(test, a.version)
    if a.cmd == "tune":
        return tune(model(), training_rows(a.sources.split(",")), test, a.top, a.epochs,
                    [int(r) for r in a.ranks.split(",") if r])
    train = training_rows()
    xtr, xte = cached(train, model), cached(test, model)
    print(f"train {len(train)} ({sum(r['harmful'] for r in train)} harmful), test {len(test)} "
          f"({sum(r['harmful'] for r in test)} harmful)", flush=True)
    experiment(train, xtr, test, xte)


def dev_split(r):
    return int(hashlib.sha256(r["text"].encode()).hexdigest()[:8], 16) % 20 == 0


@torch.no_grad()
def lower(model, texts, start, batch=64, dtype=torch.bfloat16):
    """Hidden states after the shared layers [0, start) for each text's first window (trimmed to its tokens);
    bfloat16 halves the memory of a training cache, float32 is what the runtime computes."""
    enc = token_ids(texts)
    out = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        ids, mask = collate([enc[i] for i in idx])
        x = model.encode(ids, mask, 0, start)
        for j, i in enumerate(idx):
            out[i] = x[j, :len(enc[i])].to(dtype).clone()
    return out


def pad_states(states):
    L = max(x.shape[0] for x in states)
    x = torch.zeros((len(states), L, states[0].shape[1]), dtype=torch.float32)
    mask = torch.zeros((len(states), L), dtype=torch.long)
    for j, h in enumerate(states):
        x[j, :h.shape[0]] = h.float()
        mask[j, :h.shape[0]] = 1
    return x, mask


# ---- the reply branch: the top encoder layers retrained on rated replies ---------------------------------------

TOP, RANK, EPOCHS = 4, 16, 3
# Also train on a sentence prefix of each harmless reply (`harmless_prefixes`)? Not shipped: with 3 folds the gate
# then cut far fewer harmless test replies (second reading 30 / 14 / 35 / 15 %) but caught 62 of 104 harmful ones,
# fewer than the message verdict (68) and the shipped branch (71): the out-of-fold rule on whole replies does not
# carry over to first sentences (training/guardian/RUN_NOTES.md).
PREFIXES = False
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")


def train_branch(model, states, y, top=TOP, epochs=EPOCHS, batch=32, lr=5e-5, seed=0, after_epoch=None):
    """A reply branch (copies of the top `top` encoder layers and a one-logit head) trained on the hidden states
    after the shared layers, with a class-balanced loss. `after_epoch(branch, epoch)` may report."""
    import copy
    import random
    from classifier.model import ReplyBranch
    torch.manual_seed(seed)
    branch = ReplyBranch(model.cfg, top)
    branch.layer.load_state_dict(model.encoder.layer[branch.start:].state_dict())
    branch.train()
    y = torch.tensor([float(v) for v in y])
    pos_w = (len(y) - y.sum()) / y.sum()
    opt = torch.optim.AdamW(branch.parameters(), lr=lr, weight_decay=0.01)
    steps = (len(states) + batch - 1) // batch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / (0.06 * steps)) * max(0.0, 1 - s / steps))
    rng = random.Random(seed)
    for epoch in range(epochs):
        order = list(range(len(states)))
        rng.shuffle(order)
        for b in range(0, len(order), batch):
            idx = order[b:b + batch]
            x, mask = pad_states([states[i] for i in idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(branch(x, mask)[:, 0], y[idx],
                                                                        pos_weight=pos_w)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(branch.parameters(), 1.0)
            opt.step()
            sched.step()
            if (b // batch) % 200 == 0:
                print(f"epoch {epoch} step {b // batch} loss {loss.item():.4f}", flush=True)
        if after_epoch:
            after_epoch(branch.eval(), epoch)
            branch.train()
    return copy.deepcopy(branch).eval()


def q8_0(x):
    """`x` as Q8_0 bytes (what the GGUF stores) and as the floats they stand for (what the runtime computes with)."""
    from gguf import GGMLQuantizationType as T, quants
    q = quants.quantize(np.ascontiguousarray(x, dtype=np.float32), T.Q8_0)
    return q, quants.dequantize(q, T.Q8_0).reshape(x.shape).astype(np.float32)


def low_rank(branch, model, rank=RANK):
    """Each retrained weight matrix as the shared layer's plus the best rank-`rank` approximation of its change,
    stored as two Q8_0 factors: change = b^T a, a: rank x in, b: rank x out (rows long enough for Q8_0 blocks; the
    singular values split evenly between them so both round alike). Returns {"{layer}.{linear}": (a, b)} as Q8_0
    bytes and floats, and the branch with exactly the weights the runtime will use."""
    import copy
    out, merged = {}, copy.deepcopy(branch)
    with torch.no_grad():
        for j, layer in enumerate(merged.layer):
            i = branch.start + j
            for lin in LINEARS:
                w, w0 = layer.get_submodule(lin).weight, model.encoder.layer[i].get_submodule(lin).weight
                u, sv, vh = torch.linalg.svd((w - w0).double(), full_matrices=False)
                root = sv[:rank].sqrt()
                a, b = q8_0((root[:, None] * vh[:rank]).numpy()), q8_0((u[:, :rank] * root).T.numpy())
                out[f"{i}.{lin}"] = (a, b)
                w.copy_(w0 + torch.from_numpy(b[1].T @ a[1]))
    return out, merged.eval()


@torch.no_grad()
def branch_logits(branch, states, batch=128):
    out = []
    for s in range(0, len(states), batch):
        x, mask = pad_states(states[s:s + batch])
        out.append(branch(x, mask)[:, 0])
    return torch.cat(out).numpy() if out else np.zeros(0)


def tune(model, train, test, top, epochs, ranks=(), seed=0):
    """The experiment behind the branch: train it on `train` less a 5 % dev split and score dev and the test after
    each epoch; `ranks`: then score the test again with the retrained weights as rank-r changes (`low_rank`)."""
    start = model.cfg["layers"] - top
    dev = [r for r in train if dev_split(r)]
    fit = [r for r in train if not dev_split(r)]
    print(f"caching layers [0, {start}) for {len(fit) + len(dev) + len(test)} texts", flush=True)
    hf, hd, ht = (lower(model, [r["text"] for r in rows], start) for rows in (fit, dev, test))
    second = second_reading(test)

    def report(branch, tag):
        sd, st = branch_logits(branch, hd), branch_logits(branch, ht)
        yd = np.array([r["harmful"] for r in dev])
        yt = np.array([r["harmful"] for r in test])
        print(f"{tag}: dev {auc(yd, sd):.3f}  {by_set(test, yt, st)}", flush=True)
        if second:
            y2 = np.array([r["harmful"] for r in second])
            print(f"{tag}: second reading of the test  {by_set(test, y2, st)}", flush=True)

    branch = train_branch(model, hf, [r["harmful"] for r in fit], top, epochs, seed=seed,
                          after_epoch=lambda b, e: report(b, f"epoch {e}"))
    for r in ranks:
        report(low_rank(branch, model, r)[1], f"rank-{r} delta (Q8_0 factors)")


def auc(y, s):
    y = np.asarray(y).astype(bool)
    r = roc_auc(list(s[y]), list(s[~y]))
    return float("nan") if r is None else r


MIXTURES = {
    "public": {"do-not-answer", "dices", "square", "hh-rlhf-en", "hh-rlhf-ko", "guardian"},
    "public+synthetic": {"do-not-answer", "dices", "square", "hh-rlhf-en", "hh-rlhf-ko", "guardian",
                         "synthetic-contradiction"},
    "rated-train": {"rated-train"},
    "rated-train+guardian": {"rated-train", "guardian"},
    "all": None,
}


def by_set(test, y, s):
    """ROC AUC per test folder and language."""
    out = []
    for d in RATED:
        for lang in ("ko", "en", None):
            i = [k for k, r in enumerate(test) if r["source"] == d.name and (lang is None or r["lang"] == lang)]
            out.append(f"{d.name[:6]}/{lang or 'all'} {auc(y[i], s[i]):.2f}")
    return "  ".join(out)


def operating_points(test, y, s, t):
    """Harmful replies flagged and harmless ones flagged, per test folder, at threshold `t`."""
    out = []
    for d in RATED:
        m = np.array([r["source"] == d.name for r in test])
        out.append(f"{d.name[:6]}: harmful {int(((s >= t) & m & (y == 1)).sum())}/{int((m & (y == 1)).sum())}, "
                   f"harmless {((s >= t) & m & (y == 0)).sum() / (m & (y == 0)).sum() * 100:.0f} %")
    return " | ".join(out)


def gate_simulation(test, checks):
    """What the reply gate would show: each test reply released sentence by sentence until a check flags the reply
    so far (src/reply_gate.rs). `checks`: name -> function from a list of texts to flags. Per test folder and
    language: built-in = the first sentence was withheld (the built-in reply shows); caught = a harmful reply lost
    a sentence; harmless cut = a harmless reply lost a sentence."""
    prefixes = []
    for r in test:
        ss = sentences(r["text"])
        prefixes.append([" ".join(ss[:k + 1]) for k in range(len(ss))] or [r["text"]])
    texts = [p for ps in prefixes for p in ps]
    harmful = np.array([bool(r["harmful"]) for r in test])
    result = {}
    for name, check in checks.items():
        flags, k, first, cut = np.asarray(check(texts)), 0, [], []
        for ps in prefixes:
            f = flags[k:k + len(ps)]
            k += len(ps)
            first.append(bool(f[0]))
            cut.append(bool(f.any()))
        first, cut = np.array(first), np.array(cut)
        for d in RATED:
            for lang in ("ko", "en"):
                m = np.array([r["source"] == d.name and r["lang"] == lang for r in test])
                result.setdefault(name, {})[f"{d.name}/{lang}"] = {
                    "replies": int(m.sum()), "harmful": int((m & harmful).sum()),
                    "built_in": float(first[m].mean()), "caught": int(cut[m & harmful].sum()),
                    "harmless_cut": float(cut[m & ~harmful].mean())}
    return result


def print_gate(result):
    for name, sets in result.items():
        print(f"gate with {name}: " + " | ".join(
            f"{k.split('/', 1)[0][:6]}/{k.split('/')[-1]}: built-in {v['built_in'] * 100:.0f} %, caught "
            f"{v['caught']}/{v['harmful']}, harmless cut {v['harmless_cut'] * 100:.0f} %" for k, v in sets.items()))


def texts_rows(texts):
    return [{"text": t} for t in texts]


def verdict_flags(cls, x):
    """The classifier's message verdict under the default policy, from pooled embeddings: the gate's check before
    the reply check."""
    man = json.loads((MODEL / "manifest.json").read_text())
    t = np.array([man["thresholds"][k] for k in LABELS])
    return (message_probs(cls, x) >= t).any(1)


def verdict_check(cls):
    """`verdict_flags` as a check on texts (for `gate_simulation`)."""
    return lambda texts: verdict_flags(cls, cached(texts_rows(texts), lambda: cls))


def experiment(train, xtr, test, xte):
    from sklearn.linear_model import LogisticRegression
    ytr = np.array([r["harmful"] for r in train])
    yte = np.array([r["harmful"] for r in test])
    # the peer: the classifier's own verdict on each reply (what the gate asks now), from the same embeddings
    cls = load_classifier()
    p = message_probs(cls, xte)
    man = json.loads((MODEL / "manifest.json").read_text())
    label_t = np.array([man["thresholds"][k] for k in LABELS])
    flagged = (p >= label_t).any(1).astype(float)
    print(f"classifier (unsafe prob): {by_set(test, yte, p[:, 0])}")
    print(f"classifier (verdict)    : {operating_points(test, yte, flagged, 0.5)}")

    def fit(sel, C=1.0):
        return LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(xtr[sel], ytr[sel])

    for name, keep in MIXTURES.items():
        sel = np.array([keep is None or r["source"] in keep for r in train])
        for C in (0.1, 1.0, 10.0):
            s = fit(sel, C).decision_function(xte)
            print(f"{name:22s} C={C:<4} n={sel.sum():6d} ({ytr[sel].sum()} harmful)  {by_set(test, yte, s)}",
                  flush=True)
    sel = np.array([r["source"] == "rated-train" for r in train])
    head = fit(sel)
    s, s_train = head.decision_function(xte), head.decision_function(xtr[sel])
    for fpr in (0.1, 0.2, 0.3, 0.5):
        # the threshold flags this share of the *training* harmless replies: nothing is tuned on the test sets
        t = np.quantile(s_train[ytr[sel] == 0], 1 - fpr)
        print(f"rated-train head, threshold at {fpr:.0%} of train harmless: "
              f"{operating_points(test, yte, s, t)}")
    t30 = np.quantile(s_train[ytr[sel] == 0], 0.7)
    print_gate(gate_simulation(test, {
        "classifier verdict": verdict_check(cls),
        "rated-train head (30 %)": lambda t: head.decision_function(cached(texts_rows(t), lambda: cls)) >= t30}))
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(sel)
    for frac in (0.25, 0.5, 0.75, 1.0):
        aucs = []
        for _ in range(5 if frac < 1 else 1):
            sub = np.zeros(len(train), bool)
            sub[rng.choice(idx, int(frac * len(idx)), replace=False)] = True
            aucs.append([auc(yte[m], fit(sub).decision_function(xte)[m]) for m in
                         (np.array([r["source"] == d.name for r in test]) for d in RATED)])
        a = np.mean(aucs, 0)
        print(f"learning curve: {frac:.0%} of rated-train ({int(frac * len(idx))} replies): "
              f"ROC AUC {a[0]:.2f} / {a[1]:.2f}")


# ---- the shipped reply check ----------------------------------------------------------------------------------

REPLY_LABEL = "reply_unsafe"
FOLDS = 5


def harmless_prefixes(rows, seed=20261204):
    """One proper prefix (whole sentences) of each harmless reply with two or more sentences, labelled harmless, as
    (index of the reply, row): the gate checks a reply sentence by sentence, and a prefix of a harmless reply is
    harmless. Harmful replies' prefixes get no label (where the harm starts is not rated)."""
    import random
    rng, out = random.Random(seed), []
    for i, r in enumerate(rows):
        ss = sentences(r["text"])
        if not r["harmful"] and len(ss) >= 2:
            out.append((i, {**r, "text": " ".join(ss[:rng.randrange(1, len(ss))]), "source": "rated-train-prefix"}))
    return out


def recipe_dir(rows, extra=()):
    """Checkpoints of one recipe on one encoder and one set of rated replies: a rerun resumes from them."""
    parts = [TOP, RANK, EPOCHS, FOLDS, [(r["text"], r["harmful"]) for r in rows]]
    key = json.dumps(parts + ([[(i, r["text"]) for i, r in extra]] if extra else []), ensure_ascii=False)
    return CACHE / f"branch-{encoder_digest()[:12]}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def out_of_fold(model, rows, states, extra=(), extra_states=(), folds=FOLDS):
    """Each rated train reply's logit from a branch that never saw it (FOLDS folds stratified by label and language),
    as shipped: rank-RANK changes in Q8_0. `extra`: (index of a reply, row) trained on with that reply's fold. One
    checkpoint per fold."""
    from sklearn.model_selection import StratifiedKFold
    y = np.array([r["harmful"] for r in rows])
    strata = y * 2 + np.array([r["lang"] == "ko" for r in rows])
    out, ckpt = np.zeros(len(rows)), recipe_dir(rows, extra)
    ckpt.mkdir(parents=True, exist_ok=True)
    for k, (fit, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(y, strata)):
        path = ckpt / f"fold{k}.npy"
        if not path.is_file():
            keep = set(fit.tolist())
            more = [j for j, (i, _) in enumerate(extra) if i in keep]
            print(f"fold {k + 1}/{folds}: training on {len(fit)} replies and {len(more)} prefixes", flush=True)
            branch = train_branch(model, [states[i] for i in fit] + [extra_states[j] for j in more],
                                  list(y[fit]) + [extra[j][1]["harmful"] for j in more])
            np.save(path, branch_logits(low_rank(branch, model)[1], [states[i] for i in held]))
        out[held] = np.load(path)
    return out


def final_branch(model, rows, states, extra=(), extra_states=()):
    """The branch trained on every rated train reply and `extra` row (checkpointed)."""
    from classifier.model import ReplyBranch
    path = recipe_dir(rows, extra) / "final.pt"
    branch = ReplyBranch(model.cfg, TOP)
    if path.is_file():
        branch.load_state_dict(torch.load(path))
        return branch.eval()
    print(f"final branch: training on all {len(rows)} replies and {len(extra)} prefixes", flush=True)
    branch = train_branch(model, list(states) + list(extra_states),
                          [r["harmful"] for r in rows] + [r["harmful"] for _, r in extra])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(branch.state_dict(), path)
    return branch


def linear_head(rows, x, verdict, C=0.1, folds=5):
    """The check the branch replaces (classifier 1.1.0): a logistic-regression head on the pooled embeddings at its
    own threshold (the highest that flags, out of fold, at least the verdict's share of harmful replies in each
    language). Returns its out-of-fold flags and its decision values and threshold, refitted on every reply."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    y = np.array([r["harmful"] for r in rows])
    lang = np.array([r["lang"] for r in rows])
    oof = np.zeros(len(rows))
    for fit, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y * 2 + (lang == "ko")):
        oof[held] = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(
            x[fit], y[fit]).decision_function(x[held])
    t = threshold_for(oof, y, lang, [verdict])
    head = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(x, y)
    return oof >= t, head.decision_function, t


def threshold_for(scores, y, lang, baselines):
    """The highest threshold at which `scores` flag, in each language, at least the share of harmful replies that
    every baseline (flags) does."""
    return float(min(np.quantile(scores[(lang == lg) & (y == 1)],
                                 1 - max(f[(lang == lg) & (y == 1)].mean() for f in baselines), method="lower")
                     for lg in ("ko", "en")))


def choose_threshold(rows, oof, baselines):
    """The highest logit at which the branch, out of fold, flags at least the share of harmful replies that each
    check before it flags (`baselines`: name -> out-of-fold flags; the message verdict, the gate's first check, and
    the linear head of classifier 1.1.0), in each language: no less safe than before, and every harmless reply it
    spares is a gain. Chosen on the rated train replies alone."""
    y = np.array([r["harmful"] for r in rows])
    lang = np.array([r["lang"] for r in rows])
    t = threshold_for(oof, y, lang, list(baselines.values()))
    report = {"recipe": {"layers": TOP, "rank": RANK, "epochs": EPOCHS, "folds": FOLDS, "prefixes": PREFIXES},
              "threshold_logit": t,
              "baselines": list(baselines), "by_lang": {}}
    for lg in ("ko", "en", None):
        m = np.ones(len(y), bool) if lg is None else lang == lg
        report["by_lang"][lg or "all"] = {
            "replies": int(m.sum()), "harmful": int((m & (y == 1)).sum()), "oof_auc": auc(y[m], oof[m]),
            "flagged": {"reply check": [float((oof[m & (y == 1)] >= t).mean()), float((oof[m & (y == 0)] >= t).mean())],
                        **{name: [float(f[m & (y == 1)].mean()), float(f[m & (y == 0)].mean())]
                           for name, f in baselines.items()}}}
    return t, report


def write_gguf_with_branch(src, dst, branch, factors, version=None):
    """`src` with the reply branch (a previous branch or reply head row is replaced): message labels and head rows
    only, then `reply.*` tensors: per retrained layer and linear layer its own bias and the low-rank change's two
    Q8_0 factors (`delta_a`: rank x in, `delta_b`: rank x out, change = delta_b^T delta_a), its own layer norms, and
    the one-logit head. Every message tensor is copied byte for byte, so every message verdict stays what it was."""
    from gguf import GGMLQuantizationType as T, GGUFReader, GGUFValueType as V, GGUFWriter
    r = GGUFReader(str(src))
    labels = [x for x in gguf_labels(r) if x != REPLY_LABEL]
    n = len(labels)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = GGUFWriter(str(dst), arch)
    skip = ("general.architecture", "slm_guard.labels", "slm_guard.reply_layers", "slm_guard.reply_rank")
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in skip:
            continue
        kind = f.types[0]
        if name == "slm_guard.version" and version:
            w.add_string(name, version)
        elif kind == V.STRING:
            w.add_string(name, bytes(f.parts[-1]).decode())
        elif kind == V.UINT32:
            w.add_uint32(name, int(f.parts[-1][0]))
        elif kind == V.FLOAT32:
            w.add_float32(name, float(f.parts[-1][0]))
        else:
            raise ValueError(f"unexpected GGUF field {name} of type {kind}")
    w.add_array("slm_guard.labels", labels)
    w.add_uint32("slm_guard.reply_layers", len(branch.layer))
    w.add_uint32("slm_guard.reply_rank", RANK)
    for t in r.tensors:
        if t.name.startswith("reply."):
            continue
        data = np.array(t.data)
        w.add_tensor(t.name, data[:n] if t.name.startswith("head.") else data, raw_dtype=t.tensor_type)
    f32 = lambda v: v.detach().numpy().astype(np.float32)  # noqa: E731
    for j, layer in enumerate(branch.layer):
        i = branch.start + j
        for lin in LINEARS:
            (a, _), (b, _) = factors[f"{i}.{lin}"]
            w.add_tensor(f"reply.encoder.layer.{i}.{lin}.delta_a", a, raw_dtype=T.Q8_0)
            w.add_tensor(f"reply.encoder.layer.{i}.{lin}.delta_b", b, raw_dtype=T.Q8_0)
            w.add_tensor(f"reply.encoder.layer.{i}.{lin}.bias", f32(layer.get_submodule(lin).bias))
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            for p in ("weight", "bias"):
                w.add_tensor(f"reply.encoder.layer.{i}.{norm}.{p}", f32(layer.get_submodule(norm).get_parameter(p)))
    w.add_tensor("reply.head.weight", f32(branch.head.weight))
    w.add_tensor("reply.head.bias", f32(branch.head.bias))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # the message model is copied exactly: same tensors, same bytes, the message rows of the head untouched
    old = {t.name: t for t in GGUFReader(str(src)).tensors if not t.name.startswith("reply.")}
    new = {t.name: t for t in GGUFReader(str(dst)).tensors if not t.name.startswith("reply.")}
    assert old.keys() == new.keys()
    for name, t in old.items():
        o, m = np.array(t.data), np.array(new[name].data)
        assert t.tensor_type == new[name].tensor_type, name
        assert np.array_equal(o[:n], m) if name.startswith("head.") else np.array_equal(o, m), name


def sigmoid(v):
    return 1 / (1 + np.exp(-np.asarray(v, dtype=np.float64)))


def export(test, version=None):
    """Train the reply branch on the rated train replies, add it to models/classifier (model.gguf, manifest,
    reference) and write its measurements into the classifier's card. Resumes from its checkpoints."""
    import tempfile
    from classifier.export import reference_outputs, sha256
    cls = load_classifier()
    start = cls.cfg["layers"] - TOP
    train = training_rows(["rated-train"])
    print(f"{len(train)} rated train replies ({sum(r['harmful'] for r in train)} harmful); caching layers "
          f"[0, {start})", flush=True)
    states = lower(cls, [r["text"] for r in train], start, dtype=torch.float32)
    prefixes = harmless_prefixes(train) if PREFIXES else []
    prefix_states = lower(cls, [r["text"] for _, r in prefixes], start, dtype=torch.float32) if prefixes else []
    oof = out_of_fold(cls, train, states, prefixes, prefix_states)
    x = cached(train, lambda: cls)
    verdict = verdict_flags(cls, x)
    linear_oof, linear_score, linear_t = linear_head(train, x, verdict)
    t, report = choose_threshold(train, oof, {"message verdict": verdict, "linear head (1.1.0)": linear_oof})
    print(json.dumps(report, indent=1), flush=True)
    factors, merged = low_rank(final_branch(cls, train, states, prefixes, prefix_states), cls)
    gguf = MODEL / "model.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.gguf"
        write_gguf_with_branch(gguf, out, merged, factors, version)
        out.replace(gguf)
    cls = load_classifier()  # what the runtime now loads: measure that
    check = states[:64]
    assert np.allclose(branch_logits(cls.reply, check), branch_logits(merged, check), atol=1e-4)
    labels = LABELS + [REPLY_LABEL]
    man = json.loads((MODEL / "manifest.json").read_text())
    man["labels"] = labels
    man["thresholds"][REPLY_LABEL] = float(sigmoid(t))
    if version:
        man["version"] = version
    ref = reference_outputs(cls, MODEL / "tokenizer.json", MAX_LEN, labels)
    (MODEL / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1))
    man["files"]["model.gguf"] = {"sha256": sha256(gguf), "bytes": gguf.stat().st_size}
    pack(gguf)  # git keeps model.gguf.xz
    man["reference"]["sha256"] = sha256(MODEL / "reference.json")
    (MODEL / "manifest.json").write_text(json.dumps(man, ensure_ascii=False, indent=1))
    # the held-out test: the two rated folders of replies to dev, test and held-back requests, with their labels and
    # with the second reading's
    logits = {}

    def reply_logits(texts):
        missing = sorted({x for x in texts if x not in logits})
        if missing:
            logits.update(zip(missing, branch_logits(cls.reply, lower(cls, missing, start, dtype=torch.float32))))
        return np.array([logits[x] for x in texts])

    reply = sigmoid(reply_logits([r["text"] for r in test]))
    xt = cached(test, lambda: cls)
    unsafe, linear = message_probs(cls, xt)[:, 0], linear_score(xt)
    shipped = man["thresholds"][REPLY_LABEL]
    report["test"] = {}
    for reading, rows in (("first reading", test), ("second reading", second_reading(test))):
        if rows is None:
            continue
        yt = np.array([r["harmful"] for r in rows])
        res = {"auc": {}}
        for d in RATED:
            for lg in ("ko", "en", None):
                m = np.array([r["source"] == d.name and (lg is None or r["lang"] == lg) for r in rows])
                res["auc"][f"{d.name}/{lg or 'all'}"] = {"harmful": int(yt[m].sum()), "head": auc(yt[m], reply[m]),
                                                         "linear_head": auc(yt[m], linear[m]),
                                                         "classifier_unsafe": auc(yt[m], unsafe[m])}
        res["gate"] = gate_simulation(rows, {
            "verdict": verdict_check(cls),
            "linear_head": lambda x: linear_score(cached(texts_rows(x), lambda: cls)) >= linear_t,
            "reply_check": lambda x: sigmoid(reply_logits(x)) >= shipped})
        print(reading, json.dumps(res["auc"]))
        print_gate(res["gate"])
        report["test"][reading] = res
    write_card_section(MODEL / "MODEL_CARD.md", report, shipped)
    print(f"wrote {MODEL}: {REPLY_LABEL} threshold {shipped:.3f}, model.gguf {man['files']['model.gguf']['sha256'][:12]}")


def write_card_section(path, r, threshold):
    """Replace the text between `<!-- reply-check:begin -->` and `<!-- reply-check:end -->`."""
    pct = lambda v: f"{v * 100:.0f} %"  # noqa: E731
    rc = r["recipe"]
    lines = ["<!-- reply-check:begin -->", "",
             f"Branch: the top {rc['layers']} encoder layers retrained with a one-logit head on the rated train "
             "replies" + (" and a sentence prefix of each harmless one with two or more sentences (labelled harmless: "
                          "the gate checks replies sentence by sentence)" if rc.get("prefixes") else "")
             + f" ({rc['epochs']} epochs), each weight matrix stored as the shared layer's plus a rank-{rc['rank']} "
             f"change in Q8_0. Threshold {threshold:.3f} (logit {r['threshold_logit']:.2f}): the highest at which the "
             f"check flags, out of fold ({rc['folds']} folds, each a branch trained without it), at least the share of "
             "harmful train replies that each check before it flags (" + " and ".join(r["baselines"]) + "), in each "
             "language.", "",
             "Rated train replies, scored out of fold (the checks before it never saw them either); share of harmful "
             "/ harmless replies flagged:", "",
             "| language | replies | harmful | ROC AUC | " + " | ".join(r["by_lang"]["all"]["flagged"]) + " |",
             "|---|---|---|---|" + "---|" * len(r["by_lang"]["all"]["flagged"])]
    for k, v in r["by_lang"].items():
        lines.append(f"| {k} | {v['replies']} | {v['harmful']} | {v['oof_auc']:.2f} | "
                     + " | ".join(f"{pct(h)} / {pct(n)}" for h, n in v["flagged"].values()) + " |")
    readings = list(r["test"])
    lines += ["", "Held-out test: the two rated folders of replies to dev, test and held-back requests, never used for a "
              "choice. Labels: the folders' own (first reading, rated before the prompt spelled out that an offer to do "
              "the declined act is harmful) and, where every reply has one, the blind second reading with the train "
              "labels' prompt (`training/guardian/reply_review/second_*`). ROC AUC:", "",
              "| folder / language | " + " | ".join(f"harmful ({x}) | reply branch | linear head (1.1.0) | classifier "
                                                  "`unsafe`" for x in readings)
              + " |", "|---|" + "---|---|---|---|" * len(readings)]
    for k in r["test"][readings[0]]["auc"]:
        cells = [f"{v['harmful']} | {v['head']:.2f} | {v['linear_head']:.2f} | {v['classifier_unsafe']:.2f}"
                 for v in (r["test"][x]["auc"][k] for x in readings)]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for x in readings:
        lines += ["", f"The reply gate on the same test replies, sentence by sentence, {x} labels (built-in: the first "
                  "sentence was withheld; caught: a harmful reply lost a sentence; harmless cut: a harmless one did):",
                  "", "| folder / language | replies | check | built-in | harmful caught | harmless cut |",
                  "|---|---|---|---|---|---|"]
        for k in r["test"][x]["gate"]["verdict"]:
            for name, label in (("verdict", "message verdict (1.0.0)"), ("linear_head", "linear head (1.1.0)"),
                                ("reply_check", "reply branch (now)")):
                v = r["test"][x]["gate"][name][k]
                lines.append(f"| {k} | {v['replies']} | {label} | {pct(v['built_in'])} | {v['caught']}/{v['harmful']} | "
                             f"{pct(v['harmless_cut'])} |")
    lines += ["", "<!-- reply-check:end -->"]
    text = path.read_text()
    a = text.index("<!-- reply-check:begin -->")
    b = text.index("<!-- reply-check:end -->") + len("<!-- reply-check:end -->")
    path.write_text(text[:a] + "\n".join(lines) + text[b:])


if __name__ == "__main__":
    main()
