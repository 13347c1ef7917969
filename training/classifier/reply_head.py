"""The reply check: a head on the shipped classifier's encoder that tells harmful guardian replies from harmless
ones. `export` ships it; `fit` and `tune` are the experiments behind it (training/guardian/RUN_NOTES.md, "A reply
check from rated replies"; the shipped numbers: models/classifier/MODEL_CARD.md, "The reply check").

Why: the reply gate (src/reply_gate.rs) asks the classifier whether a guardian reply is unsafe. The classifier's
message verdict was trained on user messages, and a refusal names the request's topic ("I can't help you make a
bomb"), so it flags about half of the harmless replies our readers rated and barely tells the harmful ones apart
(ROC AUC 0.58 and 0.64 on the two rated test sets). A head on the frozen encoder leaves every message verdict, band
and cascade number unchanged and costs 385 floats; a few retrained top layers would cost ~7 MB.

`export` fits a logistic-regression head on the rated train replies (C and the threshold chosen out of fold, see
`choose_head`), appends it to models/classifier/model.gguf as the head's last row and label, `reply_unsafe` (every
other tensor copied byte for byte), updates the manifest (label, threshold, sha256) and reference.json, and writes
its measurements into the classifier's card.

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

    python training/classifier/reply_head.py export  # fit, add to models/classifier, measure (~1 min cached, ~4 cold)
    python training/classifier/reply_head.py fit     # linear heads on cached pooled embeddings: data mixtures,
                                                     # operating points and a learning curve, beside the classifier
    python training/classifier/reply_head.py tune --top 4 --epochs 3 --sources rated-train [--ranks 8,16,32]
                                                     # the top 4 encoder layers retrained with a one-logit head
                                                     # (and scored again as low-rank deltas)
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
from guardian.data import EN_REFUSE, KO_REFUSE, hh_turns, ko_pair  # noqa: E402
from guardian.reply_review import RATED, rated_replies, read_jsonl, roc_auc, train_ratings  # noqa: E402

MAX_LEN = 128


def gguf_labels(r):
    f = r.fields["slm_guard.labels"]
    return [bytes(f.parts[i]).decode() for i in f.data]


def load_classifier(path=MODEL / "model.gguf"):
    """The shipped GGUF, dequantized into the PyTorch twin (the runtime computes the same function). Its head has
    one row per label: the message labels, then `reply_unsafe` once `export` has added it."""
    from gguf import GGUFReader, quants
    r = GGUFReader(str(path))
    cfg = {k: int(r.fields[f"slm_guard.{k}"].parts[-1][0]) for k in
           ("hidden", "layers", "heads", "ffn", "vocab", "max_pos", "type_vocab")}
    cfg["eps"] = float(r.fields["slm_guard.layer_norm_eps"].parts[-1][0])
    sd = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        sd[t.name] = torch.from_numpy(np.array(quants.dequantize(t.data, t.tensor_type).reshape(shape),
                                               dtype=np.float32))
    m = GuardClassifier(cfg, n_labels=len(gguf_labels(r)))
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
    """sha256 of every tensor but the head's: pooled embeddings stay valid when only the head changes."""
    from gguf import GGUFReader
    h = hashlib.sha256()
    for t in GGUFReader(str(path)).tensors:
        if not t.name.startswith("head."):
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
def lower(model, texts, start, batch=64):
    """Hidden states after the frozen layers [0, start) for each text (trimmed to its tokens)."""
    enc = token_ids(texts)
    out = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]))
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        ids, mask = collate([enc[i] for i in idx])
        x = model.encode(ids, mask, 0, start)
        for j, i in enumerate(idx):
            out[i] = x[j, :len(enc[i])].to(torch.bfloat16).clone()
    return out


def pad_states(states):
    L = max(x.shape[0] for x in states)
    x = torch.zeros((len(states), L, states[0].shape[1]), dtype=torch.float32)
    mask = torch.zeros((len(states), L), dtype=torch.long)
    for j, h in enumerate(states):
        x[j, :h.shape[0]] = h.float()
        mask[j, :h.shape[0]] = 1
    return x, mask


def tune(model, train, test, top, epochs, ranks=(), batch=32, lr=5e-5, seed=0):
    """Train the top `top` encoder layers (a copy) and a one-logit head on replies; the lower layers stay the
    shipped classifier's, so the runtime can share them with the message head. `ranks`: afterwards, score the test
    again with each retrained weight matrix replaced by the shipped one plus the best rank-r approximation of the
    change (what a low-rank delta in the model file would keep)."""
    import copy
    import random
    start = model.cfg["layers"] - top
    torch.manual_seed(seed)
    layers = copy.deepcopy(model.encoder.layer[start:]).train()
    head = torch.nn.Linear(model.cfg["hidden"], 1)
    params = list(layers.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    dev = [r for r in train if dev_split(r)]
    fit = [r for r in train if not dev_split(r)]
    print(f"caching layers [0, {start}) for {len(fit) + len(dev) + len(test)} texts", flush=True)
    hf, hd, ht = (lower(model, [r["text"] for r in rows], start) for rows in (fit, dev, test))
    y = torch.tensor([float(r["harmful"]) for r in fit])
    pos_w = torch.tensor((len(y) - y.sum()) / y.sum())

    def forward(states):
        x, mask = pad_states(states)
        bias = model.attention_bias(mask)
        for layer in layers:
            x = layer(x, bias)
        return head(model.pool(x, mask))[:, 0]

    @torch.no_grad()
    def scores(states):
        layers.eval()
        out = torch.cat([forward(states[s:s + 128]) for s in range(0, len(states), 128)]).numpy()
        layers.train()
        return out

    second = second_reading(test)

    def report(tag):
        sd, st = scores(hd), scores(ht)
        yd = np.array([r["harmful"] for r in dev])
        yt = np.array([r["harmful"] for r in test])
        print(f"{tag}: dev {auc(yd, sd):.3f}  {by_set(test, yt, st)}", flush=True)
        if second:
            y2 = np.array([r["harmful"] for r in second])
            print(f"{tag}: second reading of the test  {by_set(test, y2, st)}", flush=True)

    steps = (len(fit) + batch - 1) // batch * epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / (0.06 * steps)) * max(0.0, 1 - s / steps))
    rng = random.Random(seed)
    for epoch in range(epochs):
        order = list(range(len(fit)))
        rng.shuffle(order)
        for b in range(0, len(order), batch):
            idx = order[b:b + batch]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                forward([hf[i] for i in idx]), y[idx], pos_weight=pos_w)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if (b // batch) % 200 == 0:
                print(f"epoch {epoch} step {b // batch} loss {loss.item():.4f}", flush=True)
        report(f"epoch {epoch}")
    trained = copy.deepcopy(layers.state_dict())
    base = model.encoder.layer[start:].state_dict()
    for r in ranks:
        low = {}
        for name, w in trained.items():
            if w.dim() == 2:  # a weight matrix: keep the top-r singular directions of its change
                u, s, vh = torch.linalg.svd(w - base[name], full_matrices=False)
                low[name] = base[name] + (u[:, :r] * s[:r]) @ vh[:r]
            else:  # biases and layer norms: kept whole (a few thousand floats)
                low[name] = w
        layers.load_state_dict(low)
        report(f"rank-{r} delta")
    layers.load_state_dict(trained)


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


def gate_simulation(test, cls, checks):
    """What the reply gate would show: each test reply released sentence by sentence until a check flags the reply
    so far (src/reply_gate.rs). `checks`: name -> function from pooled embeddings to flags. Per test folder and
    language: built-in = the first sentence was withheld (the built-in reply shows); caught = a harmful reply lost
    a sentence; harmless cut = a harmless reply lost a sentence."""
    prefixes = []
    for r in test:
        ss = sentences(r["text"])
        prefixes.append([" ".join(ss[:k + 1]) for k in range(len(ss))] or [r["text"]])
    x = cached([{"text": p} for ps in prefixes for p in ps], lambda: cls)
    harmful = np.array([bool(r["harmful"]) for r in test])
    result = {}
    for name, check in checks.items():
        flags, k, first, cut = check(x), 0, [], []
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


def verdict_check(cls):
    """Today's check before the reply head: the classifier's message verdict under the default policy."""
    man = json.loads((MODEL / "manifest.json").read_text())
    t = np.array([man["thresholds"][k] for k in LABELS])
    return lambda x: (message_probs(cls, x) >= t).any(1)


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
    print_gate(gate_simulation(test, cls, {"classifier verdict": verdict_check(cls),
                                           "rated-train head (30 %)": lambda x: head.decision_function(x) >= t30}))
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
C_GRID = (0.03, 0.1, 0.3, 1.0)


def out_of_fold(x, y, strata, C, folds=5):
    """Decision values of each reply from a head that never saw it (stratified by label and language)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    out = np.zeros(len(y))
    for fit_i, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, strata):
        out[held] = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(
            x[fit_i], y[fit_i]).decision_function(x[held])
    return out


def choose_head(train, x, cls):
    """The head and its threshold, chosen on the rated train replies alone: C by out-of-fold ROC AUC; the threshold
    is the highest at which the head, out of fold, flags at least the share of harmful replies that the message
    verdict (the gate's check before) flags, in each language: no less safe than before, and every harmless reply
    it spares is a gain. Then the head is refitted on every reply."""
    from sklearn.linear_model import LogisticRegression
    y = np.array([r["harmful"] for r in train])
    lang = np.array([r["lang"] for r in train])
    strata = y * 2 + (lang == "ko")
    oof = {C: out_of_fold(x, y, strata, C) for C in C_GRID}
    C = max(C_GRID, key=lambda c: auc(y, oof[c]))
    scores = oof[C]
    verdict = verdict_check(cls)(x)
    t = float(min(np.quantile(scores[(lang == lg) & (y == 1)], 1 - verdict[(lang == lg) & (y == 1)].mean(),
                              method="lower") for lg in ("ko", "en")))
    head = LogisticRegression(C=C, max_iter=5000, class_weight="balanced").fit(x, y)
    report = {"C": C, "oof_auc": {str(c): auc(y, v) for c, v in oof.items()}, "threshold_logit": t, "by_lang": {}}
    for lg in ("ko", "en", None):
        m = np.ones(len(y), bool) if lg is None else lang == lg
        report["by_lang"][lg or "all"] = {
            "replies": int(m.sum()), "harmful": int((m & (y == 1)).sum()), "oof_auc": auc(y[m], scores[m]),
            "head_recall": float((scores[m & (y == 1)] >= t).mean()),
            "head_harmless_flagged": float((scores[m & (y == 0)] >= t).mean()),
            "verdict_recall": float(verdict[m & (y == 1)].mean()),
            "verdict_harmless_flagged": float(verdict[m & (y == 0)].mean())}
    return head.coef_[0].astype(np.float32), np.float32(head.intercept_[0]), t, report


def write_gguf_with_head(src, dst, weight, bias, version=None):
    """`src` with the reply check as one more head row and label (a previous reply row is replaced); every other
    tensor is copied byte for byte, so every message verdict stays what it was."""
    from gguf import GGUFReader, GGUFValueType as V, GGUFWriter
    r = GGUFReader(str(src))
    labels = gguf_labels(r)
    n = len(labels) - (labels[-1] == REPLY_LABEL)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = GGUFWriter(str(dst), arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "slm_guard.labels"):
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
    w.add_array("slm_guard.labels", labels[:n] + [REPLY_LABEL])
    for t in r.tensors:
        if t.name == "head.weight":
            w.add_tensor(t.name, np.vstack([np.array(t.data)[:n], weight[None]]).astype(np.float32))
        elif t.name == "head.bias":
            w.add_tensor(t.name, np.append(np.array(t.data)[:n], bias).astype(np.float32))
        else:
            w.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # the copy is exact: same tensors, same bytes, the message rows of the head untouched
    a, b = GGUFReader(str(src)), GGUFReader(str(dst))
    old, new = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert old.keys() == new.keys()
    for name, t in old.items():
        o, m = np.array(t.data), np.array(new[name].data)
        assert t.tensor_type == new[name].tensor_type, name
        assert np.array_equal(o[:n], m[:n]) if name.startswith("head.") else np.array_equal(o, m), name


def sigmoid(v):
    return float(1 / (1 + np.exp(-v)))


def export(test, version=None):
    """Fit the reply check on the rated train replies, add it to models/classifier (model.gguf, manifest,
    reference) and write its measurements into the classifier's card."""
    import tempfile
    from classifier.export import reference_outputs, sha256
    cls = load_classifier()
    train = training_rows(["rated-train"])
    x, xt = cached(train, lambda: cls), cached(test, lambda: cls)
    weight, bias, t, report = choose_head(train, x, cls)
    print(json.dumps(report, indent=1), flush=True)
    gguf = MODEL / "model.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.gguf"
        write_gguf_with_head(gguf, out, weight, bias, version)
        out.replace(gguf)
    cls = load_classifier()  # what the runtime now loads: measure that
    labels = LABELS + [REPLY_LABEL]
    man = json.loads((MODEL / "manifest.json").read_text())
    man["labels"] = labels
    man["thresholds"][REPLY_LABEL] = sigmoid(t)
    if version:
        man["version"] = version
    ref = reference_outputs(cls, MODEL / "tokenizer.json", MAX_LEN, labels)
    (MODEL / "reference.json").write_text(json.dumps(ref, ensure_ascii=False, indent=1))
    man["files"]["model.gguf"] = {"sha256": sha256(gguf), "bytes": gguf.stat().st_size}
    man["reference"]["sha256"] = sha256(MODEL / "reference.json")
    (MODEL / "manifest.json").write_text(json.dumps(man, ensure_ascii=False, indent=1))
    # the held-out test: the two rated folders of replies to dev, test and held-back requests, with their labels and
    # with the second reading's
    with torch.no_grad():
        reply = torch.sigmoid(cls.head(torch.from_numpy(xt))[:, len(LABELS)]).numpy()
    unsafe = message_probs(cls, xt)[:, 0]
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
                                                         "classifier_unsafe": auc(yt[m], unsafe[m])}
        res["gate"] = gate_simulation(rows, cls, {
            "verdict": verdict_check(cls),
            "reply_check": lambda x: torch.sigmoid(cls.head(torch.from_numpy(x))[:, len(LABELS)]).detach().numpy()
            >= shipped})
        print(reading)
        print_gate(res["gate"])
        report["test"][reading] = res
    write_card_section(MODEL / "MODEL_CARD.md", report, shipped)
    print(f"wrote {MODEL}: {REPLY_LABEL} threshold {shipped:.3f}, model.gguf {man['files']['model.gguf']['sha256'][:12]}")


def write_card_section(path, r, threshold):
    """Replace the text between `<!-- reply-check:begin -->` and `<!-- reply-check:end -->`."""
    pct = lambda v: f"{v * 100:.0f} %"  # noqa: E731
    lines = ["<!-- reply-check:begin -->", "",
             f"Head: logistic regression (C = {r['C']}, chosen by 5-fold ROC AUC: "
             + ", ".join(f"{c}: {v:.3f}" for c, v in r["oof_auc"].items()) + f"). Threshold {threshold:.3f} "
             f"(logit {r['threshold_logit']:.2f}): the highest at which the check flags, out of fold, at least the "
             "share of harmful train replies that the message verdict flags, in each language.", "",
             "Rated train replies, scored out of fold (the message verdict never saw them either):", "",
             "| language | replies | harmful | ROC AUC | reply check: harmful flagged | harmless flagged "
             "| message verdict: harmful flagged | harmless flagged |", "|---|---|---|---|---|---|---|---|"]
    for k, v in r["by_lang"].items():
        lines.append(f"| {k} | {v['replies']} | {v['harmful']} | {v['oof_auc']:.2f} | {pct(v['head_recall'])} | "
                     f"{pct(v['head_harmless_flagged'])} | {pct(v['verdict_recall'])} | "
                     f"{pct(v['verdict_harmless_flagged'])} |")
    readings = list(r["test"])
    lines += ["", "Held-out test: the two rated folders of replies to dev, test and held-back requests, never used for a "
              "choice. Labels: the folders' own (first reading, rated before the prompt spelled out that an offer to do "
              "the declined act is harmful) and, where every reply has one, the blind second reading with the train "
              "labels' prompt (`training/guardian/reply_review/second_*`). ROC AUC:", "",
              "| folder / language | " + " | ".join(f"harmful ({x}) | reply check | classifier `unsafe`" for x in readings)
              + " |", "|---|" + "---|---|---|" * len(readings)]
    for k in r["test"][readings[0]]["auc"]:
        cells = [f"{v['harmful']} | {v['head']:.2f} | {v['classifier_unsafe']:.2f}"
                 for v in (r["test"][x]["auc"][k] for x in readings)]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for x in readings:
        lines += ["", f"The reply gate on the same test replies, sentence by sentence, {x} labels (built-in: the first "
                  "sentence was withheld; caught: a harmful reply lost a sentence; harmless cut: a harmless one did):",
                  "", "| folder / language | replies | check | built-in | harmful caught | harmless cut |",
                  "|---|---|---|---|---|---|"]
        for k in r["test"][x]["gate"]["verdict"]:
            for name, label in (("verdict", "message verdict (before)"), ("reply_check", "reply check (now)")):
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
