"""One loader per raw source under ../shared/data/raw, each mapping the source's own labels to the taxonomy
(docs/TAXONOMY.md). A loader yields `Row`s; `build.py` deduplicates, splits and writes them.

Conventions:
- `categories` lists taxonomy ids; `cat_known=False` means the source says *unsafe* but not reliably *which* category,
  so training uses the row for the `unsafe` head only.
- Rows whose source label is out of the taxonomy's scope (misinformation, specialised advice, elections, copyright)
  are dropped, not labelled safe: they may still be harmful, just not our call.
- A missing file or an unexpected row raises `DataError` naming the file and row. Known, documented defects of a
  source are repaired or skipped explicitly and counted in `SKIPPED`.
"""
import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Hidden benchmarks (../shared/data/README.md, "Leakage notes"): never read, wherever they turn up.
HIDDEN = ("apeach", "xstest", "openai_moderation", "moderation_api_release", "toxic_chat_test", "toxicchat_test",
          "rtp_lx", "rtp-lx", "multijail", "parakqc")


class DataError(ValueError):
    pass


SKIPPED = Counter()  # (source, reason) -> rows skipped on purpose


@dataclass
class Row:
    text: str
    lang: str
    unsafe: int
    categories: list = field(default_factory=list)
    cat_known: bool = True
    kind: str = ""
    response: str = ""
    source: str = ""
    licence: str = ""
    id: str = ""
    group: str = ""    # sub-set inside a source (synthetic batch file), for held-out groups


@dataclass(frozen=True)
class Source:
    name: str          # folder under raw/ (or "synthetic")
    licence: str
    permissive: bool   # allows commercial use of a model trained on it
    ood: bool = False  # held out whole as out-of-distribution dev/test
    cap: int = 0       # max rows kept (deterministic sample, label ratio kept), 0 = all
    benign_cap: int = 0  # max benign rows kept (for sources that are mostly benign instructions)


SOURCES = {s.name: s for s in [
    Source("kocohub__korean-hate-speech", "CC-BY-SA-4.0", True),
    Source("smilegate-ai__korean_unsmile_dataset", "CC-BY-NC-ND-4.0", False),
    Source("adlnlp__K-MHaS", "CC-BY-SA-4.0", True, ood=True, cap=6000),
    Source("ZIZUN__korean-malicious-comments-dataset", "MIT", True),
    Source("2runo__Curse-detection-data", "MIT", True),
    Source("sgunderscore__hatescore-korean-hate-speech", "Apache-2.0", True),
    Source("songys__Toxic_comment_data", "MIT", True, cap=3000),
    Source("tunib-ai__DKTC", "CC-BY-NC-SA-4.0", False),
    Source("cardy20__KODOLI", "CC-BY-SA-4.0", True, cap=15000),
    Source("naver-ai__korean-safety-benchmarks", "MIT", True),
    Source("skan0779__korean-guardrail-dataset", "MIT (red-team), GPL-3.0 (RaccoonBench), CC-BY-NC-4.0 (qualifire), "
           "CC-BY-SA-4.0 (LGBT comments), unknown (Womad)", False),
    Source("VAIV-2023__RLHF-Korean-Friendly-LLM", "none (all rights reserved)", False),
    Source("songys__Chatbot_data", "MIT", True),
    Source("airobotlab__KoChatGPT", "none", False, cap=8000),
    Source("warnikchow__3i4k", "CC-BY-SA-4.0", True, cap=6000),
    Source("songys__Question_pair", "MIT", True, cap=3000),
    Source("instructkr__LogicKor", "none", False),
    Source("korquad__korquad.github.io", "CC-BY-ND-2.0-KR", False, cap=3000),
    Source("kunishou__do-not-answer-ja", "CC-BY-NC-SA-4.0", False, ood=True),
    Source("andyrdt__refusal_direction", "Apache-2.0 (harmful sets MIT); Alpaca CC-BY-NC-4.0", False,
           benign_cap=12000),
    Source("busycalibrating__AdversariaLLM", "MIT", True),
    Source("declare-lab__red-instruct", "Apache-2.0", True),
    Source("bertiev__SimpleSafetyTests", "CC-BY-4.0", True, ood=True),
    Source("dmg-illc__JUDGE-BENCH", "CC-BY-NC-4.0", False),
    Source("NVIDIA__garak", "Apache-2.0 (jailbreak_llms MIT)", True),
    Source("kaif0102__Sentinel-AI-Defense-System-", "MIT", True),
    Source("microsoft__TOXIGEN", "CDLA-Permissive-2.0", True),
    Source("t-davidson__hate-speech-and-offensive-language", "MIT", True, cap=10000),
    Source("tatsu-lab__alpaca_eval", "Apache-2.0", True, ood=True),
    Source("tatsu-lab__stanford_alpaca", "CC-BY-NC-4.0", False),
    Source("yizhongw__self-instruct", "Apache-2.0", True),
    Source("synthetic", "Apache-2.0 (written for this project)", True),
]}

# Sub-sources whose licence differs from their folder's headline (row-level licence tracking).
PERMISSIVE_OVERRIDE = {
    ("skan0779__korean-guardrail-dataset", "MIT"): True,
    ("skan0779__korean-guardrail-dataset", "CC-BY-SA-4.0"): True,
    ("andyrdt__refusal_direction", "MIT"): True,
}


def is_permissive(row):
    return PERMISSIVE_OVERRIDE.get((row.source, row.licence), SOURCES[row.source].permissive)


# ----------------------------------------------------------------------------------------------------------------
# file helpers that name the file and row on every problem

def _path(root, rel):
    p = Path(root) / rel
    low = str(p).lower()
    if any(h in low for h in HIDDEN):
        raise DataError(f"{p}: refusing to read a hidden benchmark (../shared/data/README.md, leakage notes)")
    if not p.is_file():
        raise DataError(f"{p}: source file is missing")
    return p


def _json(root, rel):
    p = _path(root, rel)
    try:
        return p, json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: malformed JSON at line {e.lineno}: {e.msg}") from None


def _jsonl(root, rel, opener=open):
    p = _path(root, rel)
    with opener(p, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield p, n, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: malformed JSON line: {e.msg}") from None


def _csv(root, rel, delimiter=",", required=(), lines=None):
    p = _path(root, rel)
    text = p.read_text(encoding="utf-8-sig")
    if lines is not None:
        text = "\n".join(text.split("\n")[lines[0]:lines[1]])
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    reader.fieldnames = [f.strip('"') for f in reader.fieldnames or []]  # songys test header quotes its names
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(f"{p}: expected columns {missing} not in header {reader.fieldnames}")
    for n, rec in enumerate(reader, 2):
        if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
            SKIPPED[(p.relative_to(Path(root)).parts[0], "empty row")] += 1
            continue
        yield p, n, rec


def _need(p, n, rec, key, allowed=None):
    v = rec.get(key)
    if v is None or (allowed is not None and v not in allowed):
        raise DataError(f"{p}:{n}: field {key!r} is {v!r}, expected one of {sorted(allowed) if allowed else 'a value'}")
    return v


HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e\u1100-\u11ff]")


def looks_english(text):
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) > 0.95


# ----------------------------------------------------------------------------------------------------------------
# Korean

def kocohub(root):
    s = "kocohub__korean-hate-speech"
    for rel in ("labeled/train.tsv", "labeled/dev.tsv"):
        for p, n, r in _csv(root, f"{s}/{rel}", "\t", ("comments", "hate", "bias")):
            hate = _need(p, n, r, "hate", {"hate", "offensive", "none"})
            if hate == "none":
                yield Row(r["comments"], "ko", 0, kind="comment")
            else:
                cat = "hate" if hate == "hate" and r["bias"] != "none" else "harassment"
                yield Row(r["comments"], "ko", 1, [cat], kind="comment")


UNSMILE_HATE = ["여성/가족", "남성", "성소수자", "인종/국적", "연령", "지역", "종교", "기타 혐오"]


def unsmile(root):
    s = "smilegate-ai__korean_unsmile_dataset"
    for rel in ("unsmile_train_v1.0.tsv", "unsmile_valid_v1.0.tsv"):
        for p, n, r in _csv(root, f"{s}/{rel}", "\t", ["문장", "clean", "악플/욕설"] + UNSMILE_HATE):
            flags = {k: _need(p, n, r, k, {"0", "1"}) == "1" for k in UNSMILE_HATE + ["악플/욕설", "clean"]}
            cats = (["hate"] if any(flags[k] for k in UNSMILE_HATE) else []) + (["harassment"] if flags["악플/욕설"] else [])
            if flags["clean"] and cats:
                raise DataError(f"{p}:{n}: row is both clean and labelled {cats}")
            yield Row(r["문장"], "ko", int(bool(cats)), cats, kind="comment")


KMHAS_HATE = {"0", "1", "2", "4", "5", "6", "7"}  # origin, physical, politics, age, gender, race, religion


def kmhas(root):
    s = "adlnlp__K-MHaS"
    for rel in ("data/kmhas_valid.txt", "data/kmhas_test.txt"):
        for p, n, r in _csv(root, f"{s}/{rel}", "\t", ("document", "label")):
            labels = set(_need(p, n, r, "label").split(","))
            if not labels <= KMHAS_HATE | {"3", "8"}:
                raise DataError(f"{p}:{n}: unknown K-MHaS labels {labels}")
            if labels == {"8"}:
                yield Row(r["document"], "ko", 0, kind="comment")
            else:
                cats = (["hate"] if labels & KMHAS_HATE else []) + (["harassment"] if "3" in labels else [])
                yield Row(r["document"], "ko", 1, cats, kind="comment")


def zizun(root):
    """Tab-separated despite .csv; label column `lable` is inverted (0 = malicious). 26 rows are wrapped whole in
    CSV quotes (text + tab + label inside one quoted field): unwrap them; rows with no label at all are skipped."""
    s = "ZIZUN__korean-malicious-comments-dataset"
    p = _path(root, f"{s}/Dataset.csv")
    lines = p.read_text(encoding="utf-8-sig").split("\n")
    if lines[0].strip() != "content\tlable":
        raise DataError(f"{p}:1: unexpected header {lines[0]!r}")
    for n, line in enumerate(lines[1:], 2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith('"') and line.endswith('"') and line.count("\t") == 1 and line[-2] in "01":
            line = line[1:-1].replace('""', '"')
        text, _, label = line.rpartition("\t")
        label = label.strip()
        if label not in ("0", "1") or not text.strip():
            SKIPPED[(s, "no label")] += 1
            continue
        yield Row(text.strip('"'), "ko", int(label == "0"), ["harassment"], cat_known=False, kind="comment")


def curse(root):
    s = "2runo__Curse-detection-data"
    p = _path(root, f"{s}/dataset.txt")
    for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("|")
        if not sep or label.strip() not in ("0", "1"):
            raise DataError(f"{p}:{n}: expected 'text|0' or 'text|1', got {line[:80]!r}")
        yield Row(text, "ko", int(label.strip()), ["harassment"] if label.strip() == "1" else [], kind="comment")


def hatescore(root):
    s = "sgunderscore__hatescore-korean-hate-speech"
    for p, n, r in _csv(root, f"{s}/HateScore.csv", ",", ("comment", "macrolabel")):
        m = _need(p, n, r, "macrolabel", {"Clean", "혐오발언", "단순 악플"})
        cats = {"Clean": [], "혐오발언": ["hate"], "단순 악플": ["harassment"]}[m]
        yield Row(r["comment"], "ko", int(bool(cats)), cats, kind="comment")


def songys_toxic(root):
    """`toxic` = 1 on 99.7 % of rows (it means "negative review"): unusable. The other flags are sparse and noisy, so
    only reviews with no flag at all are kept, as benign hard negatives (negative sentiment is not harm)."""
    s = "songys__Toxic_comment_data"
    for rel in ("ko_train_label.csv", "ko_test_label.csv"):
        for p, n, r in _csv(root, f"{s}/{rel}", ",", ("document", "obscene", "threat", "insult", "identity_hate")):
            if any(_need(p, n, r, k, {"0", "1"}) == "1" for k in ("obscene", "threat", "insult", "identity_hate")):
                SKIPPED[(s, "noisy flag")] += 1
                continue
            yield Row(r["document"], "ko", 0, kind="review")


DKTC = {"협박 대화": ["violence", "harassment"], "갈취 대화": ["crime", "harassment"],
        "직장 내 괴롭힘 대화": ["harassment"], "기타 괴롭힘 대화": ["harassment"]}


def dktc(root):
    s = "tunib-ai__DKTC"
    for p, n, r in _csv(root, f"{s}/data/train.csv", ",", ("class", "conversation")):
        yield Row(r["conversation"], "ko", 1, DKTC[_need(p, n, r, "class", set(DKTC))], kind="conversation")


def kodoli(root):
    s = "cardy20__KODOLI"
    for p, n, r in _csv(root, f"{s}/data/kodoli.csv", ",", ("sentences", "abuse", "offensiveness")):
        abuse = _need(p, n, r, "abuse", {"ABS", "NON"})
        off = _need(p, n, r, "offensiveness", {"OFFEN", "LIKELY", "NOT"})
        if abuse == "ABS" or off == "OFFEN":
            yield Row(r["sentences"], "ko", 1, ["harassment"], cat_known=False, kind="comment")
        elif off == "NOT":
            yield Row(r["sentences"], "ko", 0, kind="comment")
        else:
            SKIPPED[(s, "ambiguous LIKELY")] += 1


def naver(root):
    s = "naver-ai__korean-safety-benchmarks"
    for rel in ("data/KoSBi/kosbi_valid.json", "data/KoSBi/kosbi_test.json"):
        p, data = _json(root, f"{s}/{rel}")
        for n, r in enumerate(data):
            lab = _need(p, n, r, "sentence_label", {"safe", "unsafe"})
            yield Row(r["sentence"], "ko", int(lab == "unsafe"), ["hate"] if lab == "unsafe" else [], kind="statement")
    # SQuARe sensitive questions (contentious / ethical / predictive) are legitimate questions: benign.
    for rel in ("data/SQuARe/question_valid.json", "data/SQuARe/question_test.json", "data/SQuARe/question_test_ood.json"):
        p, data = _json(root, f"{s}/{rel}")
        for n, r in enumerate(data):
            yield Row(_need(p, n, r, "question"), "ko", 0, kind="benign_sensitive")


REDTEAM = {  # navirocker red-team (sub)categories -> taxonomy; None = out of scope (dropped)
    "misinformation": None, "manipulation": None, "jailbreaking": ["prompt_attack"],
    "privacy_violations": ["privacy"], "bias_stereotypes": ["hate"], "illegal_activities": ["crime"],
    "sexual_content": ["sexual"],
}
REDTEAM_SUB = {"hate_speech": ["hate"], "violence": ["violence"], "self_harm": ["self_harm"],
               "harassment": ["harassment"], "minors": ["sexual_minors"]}


def skan(root):
    s = "skan0779__korean-guardrail-dataset"
    sub = {}
    for p, n, r in _csv(root, f"{s}/data/raw/navirocker/llm-red-teaming-dataset/redteam_master_dataset.csv", ",",
                        ("prompt", "category", "subcategory")):
        sub[r["prompt"].strip()] = (r["category"], r["subcategory"])
    en = {r["id"]: r for _, _, r in _jsonl(root, f"{s}/data/processed/llm-red-teaming-dataset.jsonl")}
    for lang, rel in (("en", "data/processed/llm-red-teaming-dataset.jsonl"),
                      ("ko", "data/translated/llm-red-teaming-dataset-kr.jsonl")):
        for p, n, r in _jsonl(root, f"{s}/{rel}"):
            cat, subcat = sub.get(en[r["id"]]["query"].strip(), (r["topic"][0], ""))
            cats = REDTEAM_SUB.get(subcat, REDTEAM.get(cat, "unknown"))
            if cats is None:
                SKIPPED[(s, "out of scope")] += 1
                continue
            if cats == "unknown":
                yield Row(r["query"], lang, 1, [], cat_known=False, kind="harmful_request", licence="MIT")
            else:
                yield Row(r["query"], lang, 1, cats, kind="harmful_request", licence="MIT")
    for lang, rel in (("en", "data/processed/RaccoonBench.jsonl"), ("ko", "data/translated/raccoonbench-kr.jsonl")):
        for p, n, r in _jsonl(root, f"{s}/{rel}"):
            yield Row(r["query"], lang, 1, ["prompt_attack"], kind="prompt_attack", licence="GPL-3.0")
    for p, n, r in _csv(root, f"{s}/data/raw/qualifire/prompt-injections-benchmark/test.csv", ",", ("text", "label")):
        lab = _need(p, n, r, "label", {"benign", "jailbreak"})
        yield Row(r["text"], "en", int(lab == "jailbreak"), ["prompt_attack"] if lab == "jailbreak" else [],
                  kind="prompt_attack" if lab == "jailbreak" else "benign", licence="CC-BY-NC-4.0")
    for p, n, r in _csv(root, f"{s}/data/raw/korean-extremist-website-womad-hate-speech-data/hate_speech_data.csv",
                        ",", ("문장", "혐오 여부")):
        lab = _need(p, n, r, "혐오 여부", {"0", "1"})
        yield Row(r["문장"], "ko", int(lab), ["hate"] if lab == "1" else [], kind="comment", licence="unknown")
    for p, n, r in _csv(root, f"{s}/data/raw/lgbt-hatespeech-comments-at-naver-news-korean/20200402_koco_merged_test.tsv",
                        "\t", ("contents", "label")):
        lab = _need(p, n, r, "label", {"0.0", "1.0"})
        yield Row(r["contents"], "ko", int(lab == "1.0"), ["hate"] if lab == "1.0" else [], kind="comment",
                  licence="CC-BY-SA-4.0")


def vaiv(root):
    s = "VAIV-2023__RLHF-Korean-Friendly-LLM"
    p, data = _json(root, f"{s}/Make_dataset/translation_data/hatespeech.json")
    for n, r in enumerate(data):
        # hateful or biased utterances; the corrective reply is kept for the guardian
        yield Row(_need(p, n, r, "instruction"), "ko", 1, ["hate"], cat_known=False, kind="statement",
                  response=r.get("output", ""))
    p, data = _json(root, f"{s}/Make_dataset/step3_conversation.json")
    for n, r in enumerate(data):
        yield Row(_need(p, n, r, "prompt"), "ko", 0, kind="chat")


def chatbot(root):
    for p, n, r in _csv(root, "songys__Chatbot_data/ChatbotData.csv", ",", ("Q", "A")):
        yield Row(r["Q"], "ko", 0, kind="chat")


def kochatgpt(root):
    s = "airobotlab__KoChatGPT"
    p, data = _json(root, f"{s}/data_kochatgpt/kochatgpt_3_PPO.jsonl")
    for n, r in enumerate(data):
        yield Row(_need(p, n, r, "prompt"), "ko", 0, kind="chat")
    p = _path(root, f"{s}/data_kochatgpt/kochatgpt_seed_data.txt")
    for line in p.read_text(encoding="utf-8-sig").split("\n"):
        if line.strip():
            yield Row(line.strip(), "ko", 0, kind="chat")


def i4k(root):
    """3i4k intention classes; 0 (fragments: single words) is skipped as uninformative."""
    s = "warnikchow__3i4k"
    for rel in ("data/train_val_test/fci_train_val.txt", "data/train_val_test/fci_test.txt"):
        p = _path(root, f"{s}/{rel}")
        for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            label, sep, text = line.partition("\t")
            if not sep or label not in set("0123456"):
                raise DataError(f"{p}:{n}: expected 'label<TAB>text', got {line[:80]!r}")
            if label != "0":
                yield Row(text, "ko", 0, kind="chat")


def question_pair(root):
    for rel in ("kor_pair_train.csv", "kor_Pair_test.csv"):
        for p, n, r in _csv(root, f"songys__Question_pair/{rel}", ",", ("question1", "question2")):
            yield Row(r["question1"], "ko", 0, kind="chat")
            yield Row(r["question2"], "ko", 0, kind="chat")


def logickor(root):
    for p, n, r in _jsonl(root, "instructkr__LogicKor/questions.jsonl"):
        yield Row(_need(p, n, r, "questions")[0], "ko", 0, kind="instruction")


def korquad(root):
    p, data = _json(root, "korquad__korquad.github.io/dataset/KorQuAD_v1.0_dev.json")
    for art in data["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                yield Row(qa["question"], "ko", 0, kind="question")


# ----------------------------------------------------------------------------------------------------------------
# English

DNA = {"Assisting illegal activities": ["crime"], "Social stereotypes and unfair discrimination": ["hate"],
       "Toxic language (hate speech)": ["hate", "harassment"], "Adult Content": ["sexual"],
       "Compromise privacy by leaking or inferring private information (person/individual)": ["privacy"]}


def do_not_answer(root):
    """Only the harm types inside the taxonomy; misinformation, chatbot-as-human, organisational secrets, mental
    health (mixed intents) and 'unethical actions' are out of scope."""
    s = "kunishou__do-not-answer-ja"
    for p, n, r in _csv(root, f"{s}/datasets/Instruction/do_not_answer_en.csv", ",", ("types_of_harm", "question")):
        cats = DNA.get(r["types_of_harm"])
        if cats is None:
            SKIPPED[(s, "out of scope")] += 1
            continue
        yield Row(r["question"], "en", 1, cats, cat_known=r["types_of_harm"] != "Toxic language (hate speech)",
                  kind="harmful_request")


HARMBENCH = {"cybercrime_intrusion": ["crime"], "chemical_biological": ["crime"], "illegal": ["crime"],
             "harassment_bullying": ["harassment"], "harmful": "unknown",
             "misinformation_disinformation": None, "copyright": None}
JBB = {"Harassment/Discrimination": "unknown", "Malware/Hacking": ["crime"], "Physical harm": ["violence"],
       "Economic harm": ["crime"], "Fraud/Deception": ["crime"], "Disinformation": None,
       "Sexual/Adult content": ["sexual"], "Privacy": ["privacy"], "Expert advice": None,
       "Government decision-making": None}
STRONGREJECT = {"Disinformation and deception": "unknown", "Hate, harassment and discrimination": "unknown",
                "Illegal goods and services": ["crime"], "Non-violent crimes": ["crime"], "Sexual content": ["sexual"],
                "Violence": ["violence"]}


def _mapped(text, lang, cats, s, licence="", kind="harmful_request"):
    if cats is None:
        SKIPPED[(s, "out of scope")] += 1
        return None
    if cats == "unknown":
        return Row(text, lang, 1, [], cat_known=False, kind=kind, licence=licence)
    return Row(text, lang, 1, cats, kind=kind, licence=licence)


def refusal_direction(root):
    s = "andyrdt__refusal_direction"
    tables = {"advbench": None, "malicious_instruct": None, "tdc2023": None, "harmbench_val": HARMBENCH,
              "harmbench_test": HARMBENCH, "jailbreakbench": JBB, "strongreject": STRONGREJECT}
    for name, table in tables.items():
        p, data = _json(root, f"{s}/dataset/processed/{name}.json")
        for n, r in enumerate(data):
            text = _need(p, n, r, "instruction")
            cats = "unknown" if table is None else table.get(r.get("category"), "bad")
            if cats == "bad":
                raise DataError(f"{p}[{n}]: unknown category {r.get('category')!r}")
            row = _mapped(text, "en", cats, s, licence="MIT")
            if row:
                yield row
    p, data = _json(root, f"{s}/dataset/processed/alpaca.json")
    for n, r in enumerate(data):
        yield Row(_need(p, n, r, "instruction"), "en", 0, kind="instruction", licence="CC-BY-NC-4.0")


def adversariallm(root):
    s = "busycalibrating__AdversariaLLM"
    for p, n, r in _csv(root, f"{s}/data/behavior_datasets/harmbench_behaviors_text_all.csv", ",",
                        ("Behavior", "SemanticCategory", "ContextString")):
        if r["ContextString"].strip():  # contextual behaviours need their context document: skipped
            SKIPPED[(s, "contextual")] += 1
            continue
        cats = HARMBENCH.get(r["SemanticCategory"], "bad")
        if cats == "bad":
            raise DataError(f"{p}:{n}: unknown SemanticCategory {r['SemanticCategory']!r}")
        row = _mapped(r["Behavior"], "en", cats, s)
        if row:
            yield row
    for p, n, r in _csv(root, f"{s}/data/behavior_datasets/extra_behavior_datasets/adv_training_behaviors.csv", ",",
                        ("Behavior",)):
        yield Row(r["Behavior"], "en", 1, [], cat_known=False, kind="harmful_request")


CATQA = {"Illegal Activity": ["crime"], "Malware Viruses": ["crime"], "Economic Harm": ["crime"],
         "Fraud/Deception": ["crime"], "Adult Content": ["sexual"], "Privacy Violation Activity": ["privacy"],
         "Political Campaigning": None, "Tailored Financial Advice": None}
CATQA_SUB = {"Content Sexual exploitation": ["sexual_minors"], "Online predation": ["sexual_minors"],
             "Physical abuse": ["violence"], "Emotional and psychological abuse": ["harassment"], "Neglect": "unknown",
             "Racial or ethnic hate": ["hate"], "Religious intolerance": ["hate"], "Gender-based violence": ["violence"],
             "Cyberbullying": ["harassment"], "Terrorism and extremism": ["violence"], "Self-harm": ["self_harm"],
             "Assault and battery": ["violence"], "Hazardous material handling": "unknown",
             "Unsafe practices": "unknown", "Weapon making": ["crime", "violence"],
             "Intellectual property theft": None}


def red_instruct(root):
    s = "declare-lab__red-instruct"
    p, data = _json(root, f"{s}/harmful_questions/catqa_english.json")
    for top, subs in data.items():
        for sub, qs in subs.items():
            cats = CATQA_SUB.get(sub, CATQA.get(top, "bad"))
            if cats == "bad":
                raise DataError(f"{p}: unknown CatQA category {top!r} / {sub!r}")
            for q in qs:
                row = _mapped(q, "en", cats, s)
                if row:
                    yield row
    p, data = _json(root, f"{s}/harmful_questions/harmfulqa.json")
    for topic, subs in data.items():
        for sub, qs in subs.items():
            for q in qs:
                yield Row(q, "en", 1, [], cat_known=False, kind="harmful_request")
    for rel in ("dangerousqa.json", "adversarialqa.json"):
        p, data = _json(root, f"{s}/harmful_questions/{rel}")
        for q in data:
            yield Row(q, "en", 1, [], cat_known=False, kind="harmful_request")
    for rel in ("mt_bench", "vicuna_bench"):
        for p, n, r in _jsonl(root, f"{s}/starling_training/fastchat/llm_judge/data/{rel}/question.jsonl"):
            yield Row(_need(p, n, r, "turns")[0], "en", 0, kind="instruction")


SST = {"Suicide, Self-Harm, and Eating Disorders": ["self_harm"], "Physical harm and Violence": ["violence"],
       "Illegal and Highly Regulated items": ["crime"], "Scams and fraud": ["crime"], "Child safety": []}


def simple_safety(root):
    for p, n, r in _csv(root, "bertiev__SimpleSafetyTests/SimpleSafetyTests - test cases.csv", ",",
                        ("harm_area", "prompts_final")):
        cats = SST.get(r["harm_area"])
        if cats is None:
            raise DataError(f"{p}:{n}: unknown harm_area {r['harm_area']!r}")
        # 'Child safety' covers both sexual and physical abuse of children: category unknown there
        yield Row(r["prompts_final"], "en", 1, cats, cat_known=bool(cats), kind="harmful_request")


def toxic_chat(root):
    """ToxicChat *train* (human-annotated), as re-wrapped by JUDGE-BENCH. Non-English prompts are dropped."""
    p, data = _json(root, "dmg-illc__JUDGE-BENCH/data/toxic_chat/toxic_chat_train.json")
    for n, inst in enumerate(data["instances"]):
        text = inst["instance"]
        a = inst["annotations"]
        tox = _need(p, n, a["toxicity"], "majority_human", {"0", "1"}) == "1"
        jb = _need(p, n, a["jailbreaking"], "majority_human", {"0", "1"}) == "1"
        if not looks_english(text):
            SKIPPED[("dmg-illc__JUDGE-BENCH", "not English")] += 1
            continue
        if jb:
            yield Row(text, "en", 1, ["prompt_attack"], cat_known=False, kind="prompt_attack")
        elif tox:
            yield Row(text, "en", 1, [], cat_known=False, kind="chat")
        else:
            yield Row(text, "en", 0, kind="chat")


def garak(root):
    s = "NVIDIA__garak"
    p, data = _json(root, f"{s}/garak/data/inthewild_jailbreak_llms.json")
    for t in data:
        yield Row(t, "en", 1, ["prompt_attack"], kind="prompt_attack", licence="MIT")
    for f in sorted((Path(root) / s / "garak/data/dan").glob("*.json")):
        p, data = _json(root, f.relative_to(root))
        for t in data if isinstance(data, list) else [data]:
            yield Row(str(t).replace("{generator.name}", "ChatGPT"), "en", 1, ["prompt_attack"], kind="prompt_attack")
    p = _path(root, f"{s}/garak/data/tap/tap_jailbreaks.txt")
    for line in p.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            yield Row(line, "en", 1, ["prompt_attack"], kind="prompt_attack")
    for rel in ("past_tense_en.txt", "future_tense_en.txt"):
        p = _path(root, f"{s}/garak/data/phrasing/{rel}")
        for line in p.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                yield Row(line, "en", 1, [], cat_known=False, kind="harmful_request")


FORBIDDEN = {"Illegal Activity": ["crime"], "Hate Speech": ["hate"], "Malware": ["crime"], "Physical Harm": ["violence"],
             "Economic Harm": ["crime"], "Fraud": ["crime"], "Pornography": ["sexual"], "Privacy Violence": ["privacy"],
             "Political Lobbying": None, "Legal Opinion": None, "Financial Advice": None, "Health Consultation": None,
             "Gov Decision": None}


def forbidden(root):
    """The file holds git merge-conflict markers around two identical copies: read lines 2-392 only."""
    s = "kaif0102__Sentinel-AI-Defense-System-"
    p = _path(root, f"{s}/data/raw/forbidden_question_set.csv")
    lines = p.read_text(encoding="utf-8").split("\n")
    if not lines[0].startswith("<<<<<<<"):
        raise DataError(f"{p}:1: expected the known merge-conflict marker; the file changed, re-check the loader")
    for p, n, r in _csv(root, f"{s}/data/raw/forbidden_question_set.csv", ",", ("content_policy_name", "question"),
                        lines=(1, 392)):
        if r["question"].startswith(("=======", ">>>>>>>", "<<<<<<<")):
            raise DataError(f"{p}:{n + 1}: merge-conflict marker inside the kept range")
        cats = FORBIDDEN.get(r["content_policy_name"], "bad")
        if cats == "bad":
            raise DataError(f"{p}:{n + 1}: unknown policy {r['content_policy_name']!r}")
        row = _mapped(r["question"], "en", cats, s)
        if row:
            yield row


def toxigen(root):
    """Prompt files hold '- '-separated statements joined by a literal backslash-n; heavy duplication."""
    s = "microsoft__TOXIGEN"
    files = sorted((Path(root) / s / "prompts").glob("*_1k.txt"))
    if not files:
        raise DataError(f"{Path(root) / s / 'prompts'}: no prompt files")
    for f in files:
        hate = f.name.startswith("hate_")
        if not hate and not f.name.startswith("neutral_"):
            raise DataError(f"{f}: file name must start with hate_ or neutral_")
        for line in _path(root, f.relative_to(root)).read_text(encoding="utf-8").split("\n"):
            for stmt in line.split("\\n"):
                stmt = stmt.strip().lstrip("-").strip()
                if len(stmt) > 3:
                    yield Row(stmt, "en", int(hate), ["hate"] if hate else [], kind="statement")


def davidson(root, heldout):
    s = "t-davidson__hate-speech-and-offensive-language"
    for p, n, r in _csv(root, f"{s}/data/labeled_data.csv", ",", ("", "class", "tweet")):
        if r[""] in heldout or hashlib.sha256(r["tweet"].encode()).hexdigest() in heldout:
            SKIPPED[(s, "in held-out OpenAI moderation set")] += 1
            continue
        c = _need(p, n, r, "class", {"0", "1", "2"})
        text = re.sub(r"(RT )?@\w+:?", "@user", r["tweet"]).replace("&amp;", "&")
        yield Row(text, "en", int(c != "2"), {"0": ["hate"], "1": ["harassment"], "2": []}[c], kind="tweet")


def alpaca_eval(root):
    p, data = _json(root, "tatsu-lab__alpaca_eval/example/outputs.json")
    for n, r in enumerate(data):
        yield Row(_need(p, n, r, "instruction"), "en", 0, kind="instruction")


def seed_tasks(root):
    for p, n, r in _jsonl(root, "tatsu-lab__stanford_alpaca/seed_tasks.jsonl"):
        yield Row(_need(p, n, r, "instruction"), "en", 0, kind="instruction")


def self_instruct(root):
    for p, n, r in _jsonl(root, "yizhongw__self-instruct/human_eval/user_oriented_instructions.jsonl"):
        yield Row(_need(p, n, r, "instruction"), "en", 0, kind="instruction")


def synthetic(root, syn_dir):
    files = sorted(Path(syn_dir).glob("batch_*.jsonl"))
    if not files:
        raise DataError(f"{syn_dir}: no synthetic batch_*.jsonl files")
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                yield Row(r["text"], r["lang"], int(r["unsafe"]), list(r["categories"]), kind=r["kind"],
                          response=r.get("response") or "", id=r["id"], group=f.stem)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataError(f"{f}:{n}: malformed synthetic row: {e}") from None


def heldout_ids(shared):
    p = Path(shared) / "heldout_openai_overlap.tsv"
    if not p.is_file():
        raise DataError(f"{p}: missing (needed to drop the 13 tweets that are in the hidden OpenAI moderation set)")
    lines = p.read_text().strip().split("\n")[1:]
    return {line.split("\t")[0] for line in lines} | {line.split("\t")[1] for line in lines}


def load_all(shared, syn_dir):
    """(source name, generator) for every loader, in priority order for deduplication (first wins)."""
    root = Path(shared) / "raw"
    if not root.is_dir():
        raise DataError(f"{root}: raw data folder is missing")
    held = heldout_ids(shared)
    return [
        # held-out (OOD) sources first, so a duplicate elsewhere never leaks them into training
        ("adlnlp__K-MHaS", kmhas(root)),
        ("kunishou__do-not-answer-ja", do_not_answer(root)),
        ("bertiev__SimpleSafetyTests", simple_safety(root)),
        ("tatsu-lab__alpaca_eval", alpaca_eval(root)),
        ("synthetic", synthetic(root, syn_dir)),
        # finer labels before coarser copies (BEEP! before ZIZUN, which re-uses it)
        ("smilegate-ai__korean_unsmile_dataset", unsmile(root)),
        ("kocohub__korean-hate-speech", kocohub(root)),
        ("sgunderscore__hatescore-korean-hate-speech", hatescore(root)),
        ("2runo__Curse-detection-data", curse(root)),
        ("ZIZUN__korean-malicious-comments-dataset", zizun(root)),
        ("cardy20__KODOLI", kodoli(root)),
        ("tunib-ai__DKTC", dktc(root)),
        ("naver-ai__korean-safety-benchmarks", naver(root)),
        ("skan0779__korean-guardrail-dataset", skan(root)),
        ("VAIV-2023__RLHF-Korean-Friendly-LLM", vaiv(root)),
        ("songys__Toxic_comment_data", songys_toxic(root)),
        ("songys__Chatbot_data", chatbot(root)),
        ("songys__Question_pair", question_pair(root)),
        ("warnikchow__3i4k", i4k(root)),
        ("instructkr__LogicKor", logickor(root)),
        ("korquad__korquad.github.io", korquad(root)),
        ("airobotlab__KoChatGPT", kochatgpt(root)),
        ("busycalibrating__AdversariaLLM", adversariallm(root)),
        ("andyrdt__refusal_direction", refusal_direction(root)),
        ("declare-lab__red-instruct", red_instruct(root)),
        ("kaif0102__Sentinel-AI-Defense-System-", forbidden(root)),
        ("dmg-illc__JUDGE-BENCH", toxic_chat(root)),
        ("NVIDIA__garak", garak(root)),
        ("microsoft__TOXIGEN", toxigen(root)),
        ("t-davidson__hate-speech-and-offensive-language", davidson(root, held)),
        ("tatsu-lab__stanford_alpaca", seed_tasks(root)),
        ("yizhongw__self-instruct", self_instruct(root)),
    ]
