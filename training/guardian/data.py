"""Build the guardian's multi-task training data (classify / respond / force; formats in `spec.py`).

    python training/guardian/data.py          # -> training/data/build/guardian/{train,dev,test,heldback}.jsonl + stats.json

Inputs: the classifier's `training/data/build/unified.jsonl` (its splits are authoritative), the public response sets
in `../shared/data/raw` (SQuARe acceptable responses, AdversariaLLM safe responses, do-not-answer refusals, hh-rlhf
harmless-base single-turn refusals in English and in sionic-ai's Korean translation) and the synthetic force-safety
batch `training/data/synthetic/force_g.jsonl`. Hidden benchmarks are never read.

Row: {id, task, lang, text, unsafe, categories, response, source, kind}. Rules:
- classify: every unified train row goes to train (the trainer subsamples); dev / test get a stratified subsample of
  the unified dev / test split (1,500 ko + 1,000 en each; ids also in `classify_eval_ids.json`).
- respond / force: a query that is in unified keeps unified's split (ood_dev -> dev, ood_test -> test); any other
  query is routed by a hash of its normalised text (92 % train, 4 % dev, 4 % test).
- no query of unified dev / test / ood, nor of the guardian's dev / test / heldback, reaches train.json (compared
  after normalize + lowercase), for any task.
- responses 10-500 characters, in the query's language (Hangul ratio), boilerplate AI openings stripped, deduped;
  every self-harm response points to 109 (ko) or 988 / a local emergency number (en).
Deterministic (seed 20240917); runs in well under a minute on one core.
"""
import csv
import gzip
import hashlib
import json
import random
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from training.common.normalize import normalize  # noqa: E402
from training.guardian.spec import CATEGORIES  # noqa: E402

SEED = 20240917
UNIFIED = ROOT / "training/data/build/unified.jsonl"
RAW = ROOT.parent / "shared/data/raw"
SYNTH_FORCE = ROOT / "training/data/synthetic/force_g.jsonl"
OUT = ROOT / "training/data/build/guardian"
HIDDEN = ("apeach", "xstest", "moderation", "toxicchat_test", "toxic-chat_test", "rtp-lx", "rtp_lx", "multijail",
          "parakqc")

EVAL_SIZES = {"ko": 1500, "en": 1000}
HELDBACK_SIZES = {"ko": 150, "en": 150}
MIN_RESP, MAX_RESP = 10, 500
FORCE_COPY_SHARE = 0.25     # share of harmful respond rows also emitted as force rows (same refusal)
BALANCE_TOL = 1.15          # larger language at most this many times the smaller, per task, in train
MAX_SAME_RESPONSE = 3       # identical response text at most this often per task and language
MAX_PER_QUERY = 2           # at most this many responses per query and task

KO_HELP = "힘들 때는 혼자 견디지 말고 24시간 자살예방상담전화 109에 전화해 이야기를 나눠 주세요."
EN_HELP = ("If you are thinking about suicide or self-harm, please call or text 988 (US Suicide & Crisis Lifeline) "
           "or your local emergency number.")

STATS = {"filtered": Counter(), "self_harm_amended": Counter(), "misplaced_help_removed": Counter(),
         "sources_read": Counter()}
# A sentence that points to a crisis line: a crisis number with a contact word, or a crisis-line name.
CRISIS_NUMBER = re.compile(r"(?<![\d-])(109|1393|988|1577-0199)(?![\d-])")
CONTACT = re.compile(r"전화|상담|문자|call|text|dial|line|hotline", re.I)
CRISIS_NAME = re.compile(r"자살\s*예방|생명의\s*전화|crisis (life)?line|crisis text line|suicide (hotline|prevention)", re.I)


# ---------------------------------------------------------------- helpers
def key(text):
    return normalize(text).lower()


def hangul_ratio(s):
    h = sum(1 for c in s if "\uac00" <= c <= "\ud7a3" or "\u3131" <= c <= "\u318e")
    lat = sum(1 for c in s if c.isascii() and c.isalpha())
    return h / (h + lat) if h + lat else 0.0


def lang_ok(text, lang):
    r = hangul_ratio(text)
    return r >= 0.6 if lang == "ko" else r == 0.0


def bucket(text):
    """Stable 0..99 from the normalised text (routes rows that are not in unified)."""
    return int(hashlib.sha256(key(text).encode()).hexdigest()[:8], 16) % 100


def route(text):
    b = bucket(text)
    return "dev" if b < 4 else "test" if b < 8 else "train"


def fail(msg):
    raise SystemExit(f"data.py: {msg}")


def read_raw(rel):
    p = RAW / rel
    if any(h in rel.lower() for h in HIDDEN):
        fail(f"{rel}: refusing to read a hidden benchmark")
    if not p.is_file():
        fail(f"{p}: missing")
    return p


SELF_HARM_Q = re.compile(r"suicid|kill (myself|yourself)|self[- ]?harm|cut(ting)? myself|end (my|your) life|"
                         r"overdos|want to die|hurt myself|자살|자해|죽고 ?싶|극단적 ?선택|목숨을 ?끊|생을 ?마감|"
                         r"손목을 ?긋|스스로 목숨", re.I)
EN_CATS = [  # keyword fallback for sources without a category (first match wins)
    ("sexual_minors", r"child porn|underage|minor.{0,20}(sex|nude)|(sex|nude).{0,20}(child|minor|kid)|pedo"),
    ("self_harm", SELF_HARM_Q.pattern),
    ("sexual", r"\bsex|porn|\bnude|naked|explicit|erotic|orgasm|genital|penis|vagina|breast"),
    ("privacy", r"home address|phone number|social security|personal (info|data|details)|\bdox|track (someone|my|her|"
                r"his)|spy on|location of|where does .{0,30} live|email address|credit card number"),
    ("crime", r"bomb|explosiv|weapon|\bgun|meth|cocaine|heroin|\bdrug|hack|malware|ransomware|virus|steal|theft|"
              r"shoplift|rob\b|robbery|launder|fraud|scam|counterfeit|phish|smuggl|poison|brib|forge|pirat|"
              r"break into|burglar|illegal|nerve agent|chemical|toxin|ddos|exploit|password|lock ?pick|cheat"),
    ("violence", r"\bkill|murder|hurt|attack|beat (up|him|her)|shoot|stab|tortur|assault|punch|strangle|kidnap|"
                 r"terror|massacre|violence|fight"),
    ("hate", r"racis|\bjews?\b|jewish|muslim|black people|\bgay|lesbian|transgender|immigrant|mexican|asian|"
             r"\bn-word|nigg|slur|inferior|white people|women are|religio"),
    ("harassment", r"insult|bully|harass|humiliat|curse word|swear|\bmean to|make fun|roast|\bstupid|\bidiot|"
                   r"\bfuck|\bbitch|\bshit|\bass\b|rude"),
]
EN_CATS = [(c, re.compile(p, re.I)) for c, p in EN_CATS]


def en_category(text):
    for c, p in EN_CATS:
        if p.search(text):
            return [c]
    return []


AI_PHRASE = re.compile(r",?\s*\b(as an? (AI|artificial intelligence)( language model| assistant| model)?"
                       r"( developed by [A-Z][\w-]*)?|as a (large )?language model|as a responsible (and respectful )?"
                       r"(AI|assistant)( language model)?)\b\s*,?", re.I)
AI_SENTENCE = re.compile(r"\b(AI language model|I'?m just an AI|I am just an AI|I'?m an AI\b|I am an AI\b|"
                         r"developed by (OpenAI|Anthropic|Meta)|my programming|not within my (programming|ethical)|"
                         r"I'?m (a|an) (helpful|responsible|AI) assistant|I am (a|an) (helpful|responsible|AI) "
                         r"assistant|as an AI|my guidelines)", re.I)


def strip_ai_boilerplate(text):
    """Drop 'as an AI language model' clauses; then drop sentences that are still about being an AI."""
    t = AI_PHRASE.sub(lambda m: " " if m.group(0).strip().startswith(",") and m.group(0).strip().endswith(",")
                      else " ", text)
    t = re.sub(r"\s+([,.!?])", r"\1", re.sub(r"\s{2,}", " ", t)).strip()
    t = re.sub(r"^(I'?m sorry|I apologize|Sorry),?\s*but\s*,?\s*", lambda m: m.group(1) + ", but ", t)
    sents = re.split(r"(?<=[.!?])\s+", t)
    kept = [s for s in sents if not AI_SENTENCE.search(s)]
    t = " ".join(kept).strip()
    if t:
        t = t[0].upper() + t[1:]
    return t


def straight_quotes(s):
    return s.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')


def truncate_sentences(text, limit=MAX_RESP):
    """Longest prefix of whole sentences within `limit` (None if not even one fits or the text is cut mid-way)."""
    if len(text) <= limit:
        return text
    sents = re.split(r"(?<=[.!?다요])\s+", text)
    out = ""
    for s in sents:
        if len(out) + len(s) + 1 > limit:
            break
        out = f"{out} {s}".strip()
    return out or None


# ---------------------------------------------------------------- unified
def load_unified():
    if not UNIFIED.is_file():
        fail(f"{UNIFIED} missing: run training/data/build.py first")
    rows = [json.loads(line) for line in UNIFIED.open(encoding="utf-8")]
    by_key = {}
    for r in rows:
        by_key.setdefault(key(r["text"]), r)
    return rows, by_key


def row(id_, task, lang, text, unsafe, cats, response, source, kind):
    return {"id": id_, "task": task, "lang": lang, "text": text, "unsafe": int(unsafe),
            "categories": [c for c in cats if c in CATEGORIES], "response": response, "source": source, "kind": kind}


def stratified(rows, n, rng):
    """n rows of `rows`, proportional per (kind, unsafe, primary category) stratum with at least 2 per stratum
    (when it has them), and every category present at least once."""
    strata = defaultdict(list)
    for r in rows:
        strata[(r["kind"], r["unsafe"], (r["categories"] or ["-"])[0])].append(r)
    for v in strata.values():
        rng.shuffle(v)
    total = len(rows)
    alloc = {k: max(min(2, len(v)), round(n * len(v) / total)) for k, v in strata.items()}
    while sum(alloc.values()) > n:
        k = max(alloc, key=lambda k: (alloc[k], str(k)))
        alloc[k] -= 1
    while sum(alloc.values()) < n:
        k = max(strata, key=lambda k: (len(strata[k]) - alloc[k], str(k)))
        alloc[k] += 1
    picked = [r for k, v in sorted(strata.items(), key=lambda kv: str(kv[0])) for r in v[:alloc[k]]]
    have = {c for r in picked for c in r["categories"]}
    ids = {r["id"] for r in picked}
    for c in CATEGORIES:
        if c in have:
            continue
        cand = [r for r in rows if c in r["categories"] and r["id"] not in ids]
        if cand:
            big = max(strata, key=lambda k: (alloc[k], str(k)))
            drop = strata[big][alloc[big] - 1]
            alloc[big] -= 1
            picked = [r for r in picked if r["id"] != drop["id"]] + [cand[0]]
            ids = {r["id"] for r in picked}
    return picked


# ---------------------------------------------------------------- external response sources
def square(by_key):
    """SQuARe acceptable responses (test_ood + its raw-annotation copy): Korean careful answers -> force."""
    out, seen = [], set()
    for rel in ("naver-ai__korean-safety-benchmarks/data/SQuARe/response_test_ood.json",
                "naver-ai__korean-safety-benchmarks/data/SQuARe/with_raw_annotations/response_test_ood_annotations.json"):
        for n, r in enumerate(json.loads(read_raw(rel).read_text(encoding="utf-8"))):
            STATS["sources_read"]["square"] += 1
            for f in ("question", "response", "acceptable?"):
                if f not in r:
                    fail(f"{rel}[{n}]: no field {f!r}")
            if r["acceptable?"] != 1:
                STATS["filtered"]["square: not acceptable"] += 1
                continue
            k = (key(r["question"]), key(r["response"]))
            if k in seen:
                STATS["filtered"]["square: same row in both files"] += 1
                continue
            seen.add(k)
            u = by_key.get(key(r["question"]))
            unsafe, cats = (u["unsafe"], u["categories"]) if u else (0, [])
            out.append(row(f"square-{len(out)}", "force", "ko", r["question"], unsafe, cats, r["response"].strip(),
                           "naver-ai__korean-safety-benchmarks", "benign_sensitive"))
    return out


def adversariallm(by_key):
    out = []
    for name in ("adv_training_behaviors_safe_responses.csv", "adv_training_behaviors_safe_responses_longer.csv"):
        rel = f"busycalibrating__AdversariaLLM/data/safe_responses/{name}"
        with read_raw(rel).open(encoding="utf-8", newline="") as f:
            rd = csv.DictReader(f)
            if set(rd.fieldnames or []) != {"Behavior", "Safe_Response"}:
                fail(f"{rel}: unexpected columns {rd.fieldnames}")
            for n, r in enumerate(rd):
                STATS["sources_read"]["adversariallm"] += 1
                resp = strip_ai_boilerplate(r["Safe_Response"].strip())
                u = by_key.get(key(r["Behavior"]))
                cats = (u["categories"] if u else []) or en_category(r["Behavior"]) or ["crime"]
                out.append(row(f"advllm-{'long' if 'longer' in name else 'short'}-{n}", "respond", "en",
                               r["Behavior"].strip(), 1, cats, resp, "busycalibrating__AdversariaLLM",
                               "harmful_request"))
    return out


DNA_IN_SCOPE = {"Assisting illegal activities": ["crime"], "Social stereotypes and unfair discrimination": ["hate"],
                "Toxic language (hate speech)": ["hate", "harassment"], "Adult Content": ["sexual"],
                "Compromise privacy by leaking or inferring private information (person/individual)": ["privacy"]}
DNA_MODELS = ["Claude", "GPT4", "ChatGPT", "llama2-7b-chat", "ChatGLM2", "vicuna-7b"]


def do_not_answer(by_key):
    """Refusals (action 0) and premise refutations (action 1) judged not harmful; <= 2 per prompt, shortest first.
    In-scope harm types are unified's held-out OOD rows (they land in dev / test); out-of-scope types (misinformation,
    chatbot-as-human, mental health, unethical actions, organisational secrets) are benign by the taxonomy: force."""
    rel = "kunishou__do-not-answer-ja/datasets/data_en.csv"
    out = []
    with read_raw(rel).open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            STATS["sources_read"]["do-not-answer prompts"] += 1
            cands = []
            for m in DNA_MODELS:
                if r[f"{m}_harmful"] != "0" or r[f"{m}_action"] not in ("0", "1"):
                    STATS["filtered"]["do-not-answer: harmful or action not 0/1"] += 1
                    continue
                resp = strip_ai_boilerplate(r[f"{m}_response"].strip())
                if len(resp) < 20:
                    STATS["filtered"]["do-not-answer: nothing left after AI boilerplate"] += 1
                    continue
                resp = truncate_sentences(resp)
                if not resp:
                    STATS["filtered"]["do-not-answer: too long"] += 1
                    continue
                cands.append((len(resp), m, resp))
            cands.sort()
            cats = DNA_IN_SCOPE.get(r["types_of_harm"])
            for _, m, resp in cands[:MAX_PER_QUERY]:
                if cats is not None:
                    out.append(row(f"dna-{r['id']}-{m}", "respond", "en", r["question"], 1, cats, resp,
                                   "kunishou__do-not-answer-ja", "harmful_request"))
                else:
                    sh = ["self_harm"] if SELF_HARM_Q.search(r["question"]) else []
                    out.append(row(f"dna-{r['id']}-{m}", "force", "en", r["question"], 0, [], resp,
                                   "kunishou__do-not-answer-ja", "benign_sensitive" if not sh else "self_harm_topic"))
            STATS["filtered"]["do-not-answer: beyond 2 per prompt"] += max(0, len(cands) - MAX_PER_QUERY)
    return out


EN_REFUSE = re.compile(r"\b(I can(no|')t (help|assist|answer|provide|give|offer|advise|recommend|do that|share|tell "
                       r"you|support|condone|encourage|participate|be (a )?part)|I won'?t|I will not|I'?m not (going|able|willing|comfortable)|I am not "
                       r"(going|able|willing|comfortable)|I'?m unable|I am unable|unable to help|I'?m afraid I (can|"
                       r"won)|I don'?t (feel comfortable|want to help|think (that'?s a "
                       r"good|it'?s a good|you should))|I'?d rather not|I would rather not|not appropriate|"
                       r"inappropriate|not something I|I refuse|I do not (want|feel)|I'?m not sure (that'?s|it'?s) a "
                       r"good idea|I (really )?(shouldn'?t|should not))", re.I)
EN_COMPLY = re.compile(r"\b(here'?s|here is|here are|step|first,|you (could|can|might|should) (try|use|buy|get|"
                       r"make|put|take|go)|1\.|recipe|ingredients|sure[,!]|okay[,!] |ok[,!] )", re.I)
KO_REFUSE = re.compile(r"할 수 없|드릴 수 없|도와드릴 수 없|도울 수 없|적절하지 않|부적절|않겠습니다|않을 거|"
                       r"원하지 않|좋은 생각이 아닌|좋지 않은 생각|옳지 않|하지 않는 것이 좋|바람직하지 않|거절")
KO_COMPLY = re.compile(r"방법은 다음|단계|먼저,|1\.|레시피|재료")
HH_HUMAN = r"(?:Human|인간|사람)"
HH_ASSIST = r"(?:Assistant|nAssistant|Anssistant|A시스턴트|어시스턴트|조수|보조자|보조|비서|조교|지원자|도우미|조언자)"


def hh_turns(dialogue, human=HH_HUMAN, assist=HH_ASSIST):
    """[(speaker, text)] of an hh-rlhf transcript ('\\n\\nHuman: ...\\n\\nAssistant: ...')."""
    parts = re.split(rf"\n\s*\\?\s*\n?\s*\\?({human}|{assist})\s*:", "\n" + dialogue)
    turns = []
    for i in range(1, len(parts) - 1, 2):
        who = "H" if re.fullmatch(human, parts[i]) else "A"
        turns.append((who, parts[i + 1].strip().strip('"').strip()))
    return turns


def unescape(field):
    return field.replace("\\n", "\n").replace('\\"', '"')


def ko_chosen(line):
    """sionic-ai's lines are JSON only 20 % of the time (unescaped quotes); take the `chosen` field by position."""
    m = re.match(r'\{"chosen":\s*"(.*)",\s*"(?:거부됨|rejected|거절됨|거부)":', line, re.S)
    return unescape(m.group(1)) if m else None


def ko_pair(line):
    """Both fields of a sionic-ai line, by position (see `ko_chosen`): {"chosen", "rejected"} or None."""
    m = re.match(r'\{"chosen":\s*"(.*)",\s*"(?:거부됨|rejected|거절됨|거부|거절)":\s*"(.*)"\}\s*$', line, re.S)
    return {"chosen": unescape(m.group(1)), "rejected": unescape(m.group(2))} if m else None


def hh_rlhf():
    en_lines = [json.loads(x) for x in gzip.open(read_raw("anthropics__hh-rlhf/harmless-base/test.jsonl.gz"), "rt",
                                                   encoding="utf-8")]
    ko_lines = read_raw("sionic-ai__Data_Ko_hh-rlhf/ko_harmless_base_test.txt").read_text(encoding="utf-8").splitlines()
    if len(en_lines) != len(ko_lines):
        fail(f"hh-rlhf: {len(en_lines)} English vs {len(ko_lines)} Korean dialogues (expected the same order)")
    out, reasons = [], STATS["filtered"]
    for i, (e, kl) in enumerate(zip(en_lines, ko_lines)):
        STATS["sources_read"]["hh-rlhf dialogues"] += 1
        t = hh_turns(e["chosen"], "Human", "Assistant")
        if sum(1 for w, _ in t if w == "H") != 1 or len(t) < 2 or t[0][0] != "H":
            reasons["hh-rlhf: more than one Human turn"] += 1
            continue
        q, a = t[0][1], straight_quotes(t[1][1])
        first = " ".join(re.split(r"(?<=[.!?])\s+", a)[:2])
        if not (20 <= len(a) <= 400):
            reasons["hh-rlhf en: reply not 20-400 chars"] += 1
            continue
        if not EN_REFUSE.search(first) or EN_COMPLY.search(a):
            reasons["hh-rlhf en: not a clear refusal"] += 1
            continue
        cats = en_category(q)
        if SELF_HARM_Q.search(q):
            cats = ["self_harm"]
        out.append(row(f"hh-en-{i}", "respond", "en", q, 1, cats, a, "anthropics__hh-rlhf", "harmful_request"))
        kc = ko_chosen(kl)
        kt = hh_turns(kc) if kc else []
        if len(kt) < 2 or kt[0][0] != "H" or kt[1][0] != "A" or sum(1 for w, _ in kt if w == "H") != 1:
            reasons["hh-rlhf ko: translation does not parse as one Human turn"] += 1
            continue
        kq, ka = re.sub(r'["\s:]+$', "", kt[0][1]).strip(), kt[1][1]
        if not (20 <= len(ka) <= 400):
            reasons["hh-rlhf ko: reply not 20-400 chars"] += 1
            continue
        if not KO_REFUSE.search(ka) or KO_COMPLY.search(ka):
            reasons["hh-rlhf ko: not a clear refusal"] += 1
            continue
        out.append(row(f"hh-ko-{i}", "respond", "ko", kq, 1, cats, ka, "sionic-ai__Data_Ko_hh-rlhf",
                       "harmful_request"))
    return out


def synthetic_force():
    if not SYNTH_FORCE.is_file():
        fail(f"{SYNTH_FORCE}: missing")
    out = []
    for n, line in enumerate(SYNTH_FORCE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        r = json.loads(line)
        STATS["sources_read"]["synthetic force_g"] += 1
        if r["unsafe"] != 0 or r["kind"] != "benign_sensitive" or not r.get("response"):
            fail(f"{SYNTH_FORCE}:{n}: expected a benign_sensitive row with a response")
        out.append(row(r["id"], "force", r["lang"], r["text"], 0, [], r["response"], "synthetic:force_g",
                       "benign_sensitive"))
    return out


# ---------------------------------------------------------------- cleaning, self-harm, balance
def is_self_harm(r):
    return "self_harm" in r["categories"] or bool(SELF_HARM_Q.search(r["text"]))


def amend_self_harm(r):
    if not is_self_harm(r):
        return r
    resp = r["response"]
    if r["lang"] == "ko":
        if re.search(r"(?<!\d)109(?!\d)", resp):
            return r
        resp = f"{resp.rstrip()} {KO_HELP}"
    else:
        if re.search(r"(?<!\d)988(?!\d)|emergency (number|services)|911", resp):
            return r
        resp = f"{resp.rstrip()} {EN_HELP}"
    STATS["self_harm_amended"][f"{r['task']}/{r['lang']}"] += 1
    return {**r, "response": resp}


def is_crisis_sentence(s):
    return bool(CRISIS_NAME.search(s) or (CRISIS_NUMBER.search(s) and CONTACT.search(s)))


def strip_misplaced_help(r):
    """A crisis line belongs in self-harm replies only (amend_self_harm adds it there). Elsewhere, e.g. a weapons
    refusal ending in "call 988", it teaches the model to append a crisis line to any refusal, and the shipped
    replies show exactly that; so those sentences are dropped (the length filter then judges what is left)."""
    if is_self_harm(r):
        return r
    sents = re.split(r"(?<=[.!?다요])\s+", r["response"])
    kept = [x for x in sents if not is_crisis_sentence(x)]
    if len(kept) == len(sents):
        return r
    STATS["misplaced_help_removed"][f"{r['task']}/{r['lang']}"] += 1
    return {**r, "response": " ".join(kept).strip()}


def clean(rows):
    """Crisis lines only in self-harm replies, length and language filters, self-harm help line, and dedupe (pairs;
    same response; responses per query)."""
    out, pair_seen = [], set()
    same_resp, per_query = Counter(), Counter()
    for r in rows:
        resp = re.sub(r"\s+", " ", r["response"]).strip()
        if r["lang"] == "en":
            resp = straight_quotes(resp)
        r = strip_misplaced_help({**r, "response": resp, "text": r["text"].strip()})
        resp = r["response"]
        if not r["text"]:
            STATS["filtered"]["empty query"] += 1
            continue
        if not (MIN_RESP <= len(resp) <= MAX_RESP):
            STATS["filtered"][f"response not {MIN_RESP}-{MAX_RESP} chars"] += 1
            continue
        if not lang_ok(resp, r["lang"]):
            STATS["filtered"]["response language differs from the query's"] += 1
            continue
        r = amend_self_harm(r)
        qk, rk = key(r["text"]), key(r["response"])
        if (r["task"], qk, rk) in pair_seen:
            STATS["filtered"]["duplicate query+response"] += 1
            continue
        if same_resp[(r["task"], r["lang"], rk)] >= MAX_SAME_RESPONSE:
            STATS["filtered"][f"same response more than {MAX_SAME_RESPONSE}x"] += 1
            continue
        if per_query[(r["task"], qk)] >= MAX_PER_QUERY:
            STATS["filtered"][f"more than {MAX_PER_QUERY} responses per query"] += 1
            continue
        pair_seen.add((r["task"], qk, rk))
        same_resp[(r["task"], r["lang"], rk)] += 1
        per_query[(r["task"], qk)] += 1
        out.append(r)
    return out


def balance(rows, rng):
    """Per task: upsample the smaller language by duplication (at most x2, id marked '#dup'), then cap the larger
    at BALANCE_TOL times the smaller."""
    out = []
    for task in ("respond", "force"):
        by = {lang: [r for r in rows if r["task"] == task and r["lang"] == lang] for lang in ("ko", "en")}
        small, large = sorted(by, key=lambda k: (len(by[k]), k))
        s, big = by[small], by[large]
        if s and len(big) > BALANCE_TOL * len(s):
            extra = min(len(s), len(big) - len(s))
            dups = rng.sample(s, extra)
            s = s + [{**r, "id": f"{r['id']}#dup1"} for r in dups]
            STATS["balance"][f"{task}: {small} upsampled"] = extra
        if s and len(big) > BALANCE_TOL * len(s):
            cap = int(BALANCE_TOL * len(s))
            STATS["balance"][f"{task}: {large} capped"] = len(big) - cap
            big = rng.sample(big, cap)
        out += s + big
    return out


# ---------------------------------------------------------------- main
def main():
    rng = random.Random(SEED)
    STATS["balance"] = {}
    unified, by_key = load_unified()
    split_of = {}
    for r in unified:
        split_of.setdefault(key(r["text"]), set()).add(r["split"])
    eval_keys = {k for k, s in split_of.items() if s & {"dev", "test", "ood_dev", "ood_test"}}
    guardian_split = {"train": "train", "dev": "dev", "test": "test", "ood_dev": "dev", "ood_test": "test"}

    # -- heldback: harmful requests of unified test + ood_test, spread over categories
    heldback = []
    for lang, n in HELDBACK_SIZES.items():
        pool = [r for r in unified if r["split"] in ("test", "ood_test") and r["lang"] == lang and r["unsafe"] == 1
                and r["kind"] == "harmful_request"]
        pool.sort(key=lambda r: r["id"])
        rng.shuffle(pool)
        by_cat = defaultdict(list)
        for r in pool:
            by_cat[(r["categories"] or ["unknown"])[0]].append(r)
        order = sorted(by_cat, key=lambda c: (c == "unknown", c))
        picked = []
        while len(picked) < n and any(by_cat.values()):
            for c in order:
                if by_cat[c] and len(picked) < n:
                    picked.append(by_cat[c].pop())
        heldback += [row(r["id"], "respond", lang, r["text"], 1, r["categories"], r.get("response") or "", r["source"],
                         r["kind"]) for r in picked]
    held_keys = {key(r["text"]) for r in heldback}

    # -- classify
    splits = {"train": [], "dev": [], "test": []}
    for r in unified:
        if r["split"] == "train":
            if key(r["text"]) in eval_keys:
                STATS["filtered"]["classify: train query also in unified dev/test/ood"] += 1
                continue
            splits["train"].append(row(r["id"], "classify", r["lang"], r["text"], r["unsafe"], r["categories"], "",
                                       r["source"], r["kind"]))
    eval_ids = {}
    for sp in ("dev", "test"):
        eval_ids[sp] = []
        for lang, n in EVAL_SIZES.items():
            pool = sorted((r for r in unified if r["split"] == sp and r["lang"] == lang), key=lambda r: r["id"])
            for r in stratified(pool, n, rng):
                splits[sp].append(row(r["id"], "classify", r["lang"], r["text"], r["unsafe"], r["categories"], "",
                                      r["source"], r["kind"]))
                eval_ids[sp].append(r["id"])

    # -- respond / force candidates
    cands = []
    for r in unified:
        if (r.get("response") or "").strip() and r["split"] in guardian_split:
            src = r["source"] + (f":{r['group']}" if r.get("group") else "")
            cands.append((guardian_split[r["split"]],
                          row(r["id"], "respond", r["lang"], r["text"], r["unsafe"], r["categories"], r["response"],
                              src, r["kind"])))
    external = square(by_key) + adversariallm(by_key) + do_not_answer(by_key) + hh_rlhf() + synthetic_force()
    for r in external:
        u = by_key.get(key(r["text"]))
        sp = guardian_split[u["split"]] if u else route(r["text"])
        if not u and r["source"] == "kunishou__do-not-answer-ja" and r["task"] == "respond":
            sp = "test"  # an in-scope prompt unified dropped as a near-duplicate of a held-out row: never train
        cands.append((sp, r))

    by_split = {"train": [], "dev": [], "test": []}
    for sp, r in cands:
        if key(r["text"]) in held_keys:
            STATS["filtered"]["query is in heldback"] += 1
            continue
        by_split[sp].append(r)
    eval_guardian_keys = {key(r["text"]) for sp in ("dev", "test") for r in by_split[sp]}
    eval_guardian_keys |= {key(r["text"]) for sp in ("dev", "test") for r in splits[sp]}
    forbidden = eval_keys | held_keys | eval_guardian_keys
    kept_train = []
    for r in by_split["train"]:
        if key(r["text"]) in forbidden:
            STATS["filtered"]["train query also in dev/test/ood/heldback"] += 1
            continue
        kept_train.append(r)
    by_split["train"] = kept_train

    for sp in by_split:
        rows = clean(by_split[sp])
        harmful = sorted((r for r in rows if r["task"] == "respond" and r["unsafe"] == 1), key=lambda r: r["id"])
        copies = rng.sample(harmful, round(FORCE_COPY_SHARE * len(harmful)))
        rows += [{**r, "id": f"{r['id']}#force", "task": "force"} for r in copies]
        if sp == "train":
            rows = balance(rows, rng)
        splits[sp] += rows

    # -- final leakage check (every task): no train query in any evaluation set
    train_q = {key(r["text"]) for r in splits["train"]}
    leaks = train_q & (eval_keys | held_keys | {key(r["text"]) for sp in ("dev", "test") for r in splits[sp]})
    if leaks:
        fail(f"{len(leaks)} train queries leak into evaluation sets, e.g. {sorted(leaks)[:3]}")

    OUT.mkdir(parents=True, exist_ok=True)
    for sp, rows in splits.items():
        rows.sort(key=lambda r: (r["task"], r["id"]))
        rng.shuffle(rows)
        write(OUT / f"{sp}.jsonl", rows)
    write(OUT / "heldback.jsonl", heldback)
    (OUT / "classify_eval_ids.json").write_text(json.dumps(eval_ids, indent=1) + "\n")

    stats = {"seed": SEED, "splits": {}, "heldback": count(heldback, ("lang",)),
             "heldback_categories": dict(Counter(f"{r['lang']}/{(r['categories'] or ['unknown'])[0]}"
                                                 for r in heldback)),
             "self_harm_amended": dict(STATS["self_harm_amended"]),
             "self_harm_amended_total": sum(STATS["self_harm_amended"].values()),
             "misplaced_help_removed": dict(STATS["misplaced_help_removed"]),
             "filtered": dict(sorted(STATS["filtered"].items())), "balance": STATS["balance"],
             "sources_read": dict(STATS["sources_read"])}
    for sp, rows in splits.items():
        stats["splits"][sp] = {
            "rows": len(rows),
            "task_lang": count(rows, ("task", "lang")),
            "task_lang_unsafe": count(rows, ("task", "lang", "unsafe")),
            "respond_force_by_source": count([r for r in rows if r["task"] != "classify"], ("task", "source")),
            "duplicated_rows": sum(1 for r in rows if "#dup" in r["id"]),
        }
    (OUT / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({sp: v["task_lang"] for sp, v in stats["splits"].items()}, indent=1))
    print("heldback", stats["heldback"], "self-harm amended", stats["self_harm_amended"],
          "misplaced crisis lines removed", stats["misplaced_help_removed"])
    print("filtered", json.dumps(stats["filtered"], indent=1, ensure_ascii=False))
    print("balance", stats["balance"])
    if "--sample" in sys.argv:
        hh = [r for r in splits["train"] if r["source"].endswith("hh-rlhf") and "#" not in r["id"]]
        for r in random.Random(1).sample(hh, min(20, len(hh))):
            print(f"--- [{r['lang']}] {r['text'][:150]!r}\n    -> {r['response'][:300]!r}")


def count(rows, fields):
    return dict(sorted(Counter("/".join(str(r[f]) for f in fields) for r in rows).items()))


def write(path, rows):
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
