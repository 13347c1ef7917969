//! `slm-guard`: the native command line.
//!
//!   slm-guard classify "text"            print the verdict as JSON
//!   slm-guard classify --jsonl < in.jsonl  one verdict per input line (fields other than `text` are echoed)
//!   slm-guard check-reply "reply"         the reply gate's check on a guardian reply ({flagged, score, threshold})
//!   slm-guard check-reply --jsonl < in.jsonl  one check per line (`reply_check`; other fields echoed)
//!   slm-guard bench                       latency (messages, and the reply check), throughput, load time, peak memory
//!   slm-guard respond "text"              the guardian's response, streamed (a guardian model: models/guardian)
//!   slm-guard respond --jsonl < in.jsonl  one response per line ({"text", "force_safety"?, "max_tokens"?, ...});
//!                                         each names the unverified phone numbers in its text (`unknown_numbers`)
//!                                         and says whether it gives a verified crisis line (`crisis_line`)
//!   slm-guard bench --model models/guardian  the guardian: verdict latency at ~32/~64 tokens, decode tokens/s
//!
//! `classify --model DIR` also reads a guardian model (the manifest's `task` decides) and prints the same verdict.
//! `classify --cascade DIR` runs the cascade: the classifier (`--model`) decides clear cases, the guardian in DIR
//! the scores inside its manifest's band (combined with the classifier's score where the manifest says so).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Map, Value};
use slm_guard::cascade::{refine, refine_batch, Band};
use slm_guard::helpline;
use slm_guard::manifest::Manifest;
use slm_guard::{Guard, GuardError, Guardian, ModelFiles, Policy, RespondOptions, Verdict};

#[derive(Parser)]
#[command(
    name = "slm-guard",
    version,
    about = "Bilingual (Korean + English) chat-message safety guard"
)]
struct Cli {
    /// Model directory (manifest.json, model.gguf, tokenizer.json). Default: $SLM_GUARD_MODEL or the shipped one.
    #[arg(long, global = true)]
    model: Option<PathBuf>,
    /// CPU threads (default: all cores; `bench` defaults to 1).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify one message, or JSON lines from stdin with --jsonl.
    Classify {
        text: Option<String>,
        /// Read JSON objects with a `text` field from stdin, write one result per line.
        #[arg(long)]
        jsonl: bool,
        /// Policy JSON file (thresholds, actions, sensitivity, fail mode).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Lines classified together (bounded memory; output is written after each group).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// A guardian model directory: run the cascade (the guardian decides the classifier's uncertain band).
        #[arg(long)]
        cascade: Option<PathBuf>,
    },
    /// The guardian's response to one message, streamed to stdout (stop reason and speed on stderr).
    Respond {
        text: Option<String>,
        /// Read JSON objects with `text` (and optional `force_safety`, `max_tokens`) from stdin, write one
        /// result per line (other fields echoed).
        #[arg(long)]
        jsonl: bool,
        /// Answer as carefully as for an unsafe message (<|force-safety|>).
        #[arg(long)]
        force_safety: bool,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// End the reply where it would repeat an n-gram of this many tokens (0: never).
        #[arg(long, default_value_t = slm_guard::guardian::DEFAULT_NO_REPEAT_NGRAM)]
        no_repeat_ngram: usize,
        /// Release the reply sentence by sentence, each after the classifier's reply check (`--classifier`, default
        /// the shipped one) has read the reply so far; a flagged sentence is withheld and ends the reply (the JS
        /// default).
        #[arg(long)]
        check: bool,
        /// The classifier model directory for --check.
        #[arg(long)]
        classifier: Option<PathBuf>,
    },
    /// The reply gate's check (the classifier's `reply_unsafe`) on one guardian reply, or on JSON lines from stdin
    /// with --jsonl: would the gate withhold it? Trained on the guardian's replies, not on other models' output.
    CheckReply {
        text: Option<String>,
        /// Read JSON objects with a `text` field from stdin, write one result per line.
        #[arg(long)]
        jsonl: bool,
        /// Policy JSON file (its `sensitivity` shifts the threshold).
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Measure latency (median, p95) at ~16/64/256 tokens, batch throughput, load time and peak memory.
    Bench {
        #[arg(long, default_value_t = 50)]
        iters: usize,
        /// Write the results as JSON here as well.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn default_model_dir() -> PathBuf {
    std::env::var_os("SLM_GUARD_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/classifier")))
}

/// What answers `classify`: either kind of model (the manifest's `task` decides), or the cascade of both.
enum Model {
    Classifier(Guard),
    Guardian(Guardian),
    Cascade(Guard, Guardian, Band),
}

impl Model {
    fn load(dir: &PathBuf, cascade: Option<&PathBuf>) -> Result<Self, GuardError> {
        let files = ModelFiles::from_dir(dir)?;
        let is_guardian = Manifest::parse(&files.manifest)?.is_guardian();
        match cascade {
            None if is_guardian => Ok(Self::Guardian(Guardian::load(&files)?)),
            None => Ok(Self::Classifier(Guard::load(&files)?)),
            Some(_) if is_guardian => Err(GuardError::Input(
                "--cascade needs a classifier as --model (the guardian goes to --cascade)".into(),
            )),
            Some(gdir) => {
                let gfiles = ModelFiles::from_dir(gdir)?;
                if !Manifest::parse(&gfiles.manifest)?.is_guardian() {
                    return Err(GuardError::Input(format!(
                        "--cascade {}: not a guardian model",
                        gdir.display()
                    )));
                }
                let guardian = Guardian::load(&gfiles)?;
                let band = Band::from_manifest(guardian.manifest());
                Ok(Self::Cascade(Guard::load(&files)?, guardian, band))
            }
        }
    }

    fn check_policy(&self, policy: &Policy) -> Result<(), GuardError> {
        let check = |m: &Manifest| policy.resolve(&m.categories, &m.thresholds).map(|_| ());
        match self {
            Self::Classifier(g) => check(g.manifest()),
            Self::Guardian(g) => check(g.manifest()),
            Self::Cascade(c, g, _) => check(c.manifest()).and(check(g.manifest())),
        }
    }

    fn classify(&self, text: &str, policy: &Policy) -> Result<Verdict, GuardError> {
        match self {
            Self::Classifier(g) => g.classify(text, policy),
            Self::Guardian(g) => g.classify(text, policy),
            Self::Cascade(c, g, band) => refine(c.classify(text, policy)?, g, text, policy, band),
        }
    }

    /// One verdict per text; the guardian reads one message at a time (a per-message error becomes its
    /// fail-mode verdict, as in `Guard::classify_batch`).
    fn classify_batch(&self, texts: &[&str], policy: &Policy) -> Result<Vec<Verdict>, GuardError> {
        match self {
            Self::Classifier(g) => g.classify_batch(texts, policy),
            Self::Cascade(c, g, band) => {
                refine_batch(c.classify_batch(texts, policy)?, g, texts, policy, band)
            }
            Self::Guardian(g) => {
                let p = policy.resolve(&g.manifest().categories, &g.manifest().thresholds)?;
                Ok(texts
                    .iter()
                    .map(|t| match g.classify(t, policy) {
                        Ok(v) => v,
                        Err(e) => Verdict::failed(
                            &e,
                            &p,
                            slm_guard::reply::language(t),
                            &g.model_id(),
                            "cpu",
                        ),
                    })
                    .collect())
            }
        }
    }
}

/// The classifier that checks replies (`respond --check`), or none.
fn reply_checker(check: bool, dir: Option<&PathBuf>) -> Result<Option<Guard>, GuardError> {
    check
        .then(|| {
            Guard::load(&ModelFiles::from_dir(
                dir.cloned().unwrap_or_else(default_model_dir),
            )?)
        })
        .transpose()
}

/// One reply: raw, or gated by `checker` (see `slm_guard::reply_gate`).
fn reply(
    g: &Guardian,
    checker: Option<&Guard>,
    text: &str,
    opts: &RespondOptions,
    on_piece: impl FnMut(&str) -> bool,
) -> Result<slm_guard::Response, GuardError> {
    match checker {
        Some(guard) => slm_guard::reply_gate::respond_checked(
            g,
            guard,
            &Policy::default(),
            text,
            opts,
            on_piece,
        ),
        None => g.respond(text, opts, on_piece),
    }
}

fn respond_cmd(
    dir: &PathBuf,
    text: &str,
    defaults: RespondOptions,
    checker: Option<Guard>,
) -> Result<(), GuardError> {
    let files = ModelFiles::from_dir(dir)?;
    let g = Guardian::load(&files)?;
    drop(files);
    let opts = defaults;
    let stdout = std::io::stdout();
    let t0 = std::time::Instant::now();
    let mut first: Option<std::time::Instant> = None;
    let mut io_error = None;
    let r = reply(&g, checker.as_ref(), text, &opts, |piece| {
        first.get_or_insert_with(std::time::Instant::now);
        let mut out = stdout.lock();
        match out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
            Ok(()) => true,
            Err(e) => {
                io_error = Some(e); // stdout closed: stop generating
                false
            }
        }
    })?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    // nothing passed the check: the built-in reply (never streamed, it is not the model's)
    if r.fallback {
        print!("{}", r.text);
    }
    println!();
    let total = t0.elapsed().as_secs_f64();
    let n = r.tokens.len();
    // decode speed after the first token (which also paid for the prompt)
    let decode = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
    let tps = if n > 1 && decode > 0.0 {
        (n - 1) as f64 / decode
    } else {
        0.0
    };
    eprintln!(
        "[{}{}] {n} tokens in {total:.2} s; decode {tps:.1} tokens/s; first token after {:.0} ms; load {:.0} ms",
        serde_json::to_value(r.stopped).expect("json").as_str().unwrap_or("?"),
        if r.fallback {
            ", built-in reply"
        } else if r.crisis_line_added {
            ", crisis line added"
        } else {
            ""
        },
        first.map(|f| (f - t0).as_secs_f64() * 1e3).unwrap_or(0.0),
        g.load_ms()
    );
    Ok(())
}

/// `respond --jsonl`: one response per input line, in bounded memory; a bad line or a message the guardian
/// refuses (e.g. INPUT_TOO_LONG) yields an error object for that line and processing continues.
fn respond_jsonl(
    dir: &PathBuf,
    defaults: RespondOptions,
    checker: Option<Guard>,
) -> Result<(), GuardError> {
    let files = ModelFiles::from_dir(dir)?;
    let g = Guardian::load(&files)?;
    drop(files);
    answer_jsonl(|mut fields, text| {
        let opts = RespondOptions {
            force_safety: fields
                .get("force_safety")
                .and_then(Value::as_bool)
                .unwrap_or(defaults.force_safety),
            max_tokens: fields
                .get("max_tokens")
                .and_then(Value::as_u64)
                .map_or(defaults.max_tokens, |n| n as usize),
            no_repeat_ngram: fields
                .get("no_repeat_ngram")
                .and_then(Value::as_u64)
                .map_or(defaults.no_repeat_ngram, |n| n as usize),
            ..RespondOptions::default()
        };
        let t0 = std::time::Instant::now();
        match reply(&g, checker.as_ref(), &text, &opts, |_| true) {
            Ok(r) => fields.insert(
                "response".into(),
                json!({"text": r.text, "stopped": r.stopped, "tokens": r.tokens.len(),
                       "checked": checker.is_some(), "fallback": r.fallback,
                       "unknown_numbers": helpline::unknown_numbers(&r.text),
                       "crisis_line": helpline::gives_crisis_line(&r.text),
                       "crisis_line_added": r.crisis_line_added,
                       "ms": t0.elapsed().as_secs_f64() * 1e3}),
            ),
            Err(e) => fields.insert("error".into(), error_json(&e)),
        };
        Value::Object(fields)
    })
}

/// Answer each JSON line of stdin with `answer(fields, text)` (the line's other fields, to echo), one output line
/// per input line, flushed as it is written. A line that is not a JSON object with a string `text` gets an error
/// object with its line number instead, and processing continues.
fn answer_jsonl(
    mut answer: impl FnMut(Map<String, Value>, String) -> Value,
) -> Result<(), GuardError> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut input = std::io::stdin().lock();
    let (mut buf, mut line_no) = (Vec::new(), 0usize);
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v = match parse_line(&buf) {
            Ok((fields, text)) => answer(fields, text),
            Err(e) => at_line(e, line_no),
        };
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(())
}

/// An input line's error object, with its line number.
fn at_line(mut e: Value, line: usize) -> Value {
    e.as_object_mut()
        .expect("error object")
        .insert("line".into(), json!(line));
    e
}

/// A call's error as the `error` field of an output line.
fn error_json(e: &GuardError) -> Value {
    json!({"code": e.code(), "message": e.to_string()})
}

fn fail(e: &GuardError) -> ExitCode {
    eprintln!("slm-guard: error [{}]: {e}", e.code());
    ExitCode::from(match e {
        GuardError::Integrity { .. }
        | GuardError::Manifest(_)
        | GuardError::Version { .. }
        | GuardError::Weights(_)
        | GuardError::Tokenizer(_) => 3,
        GuardError::Io(_) => 4,
        _ => 2,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli
        .threads
        .or(matches!(cli.command, Command::Bench { .. }).then_some(1));
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string()); // read by candle's CPU kernels
    }
    let respond = matches!(cli.command, Command::Respond { .. });
    let dir = cli.model.clone().unwrap_or_else(|| {
        if respond {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/guardian"))
        } else {
            default_model_dir()
        }
    });
    let result = match cli.command {
        Command::Respond {
            text,
            jsonl,
            force_safety,
            max_tokens,
            no_repeat_ngram,
            check,
            classifier,
        } if text.is_some() != jsonl => {
            let opts = RespondOptions {
                force_safety,
                max_tokens,
                no_repeat_ngram,
            };
            reply_checker(check, classifier.as_ref()).and_then(|checker| match text {
                Some(text) => respond_cmd(&dir, &text, opts, checker),
                None => respond_jsonl(&dir, opts, checker),
            })
        }
        Command::Respond { .. } => Err(GuardError::Input(
            "give a message, or --jsonl to read JSON lines from stdin (not both)".into(),
        )),
        Command::Classify {
            text,
            jsonl,
            policy,
            batch,
            cascade,
        } => classify(&dir, cascade.as_ref(), text, jsonl, policy, batch.max(1)),
        Command::CheckReply {
            text,
            jsonl,
            policy,
        } => check_reply(&dir, text, jsonl, policy),
        Command::Bench { iters, out } => bench(&dir, iters.max(5), out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn read_policy(path: Option<PathBuf>) -> Result<Policy, GuardError> {
    match path {
        None => Ok(Policy::default()),
        Some(p) => {
            let s = std::fs::read_to_string(&p)
                .map_err(|e| GuardError::Io(format!("{}: {e}", p.display())))?;
            Policy::from_json(&s)
        }
    }
}

fn classify(
    dir: &PathBuf,
    cascade: Option<&PathBuf>,
    text: Option<String>,
    jsonl: bool,
    policy: Option<PathBuf>,
    batch: usize,
) -> Result<(), GuardError> {
    let policy = read_policy(policy)?;
    let guard = Model::load(dir, cascade)?;
    guard.check_policy(&policy)?; // reject a bad policy before reading input
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if !jsonl {
        let text = text.ok_or_else(|| {
            GuardError::Input("give a message, or --jsonl to read JSON lines from stdin".into())
        })?;
        let v = guard.classify(&text, &policy)?;
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).expect("verdict serialises")
        )?;
        return Ok(());
    }
    if text.is_some() {
        return Err(GuardError::Input(
            "--jsonl reads stdin; do not also pass a message".into(),
        ));
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    let mut pending: Vec<(usize, Result<(Map<String, Value>, String), Value>)> =
        Vec::with_capacity(batch);
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf)?;
        if n > 0 {
            line_no += 1;
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            pending.push((line_no, parse_line(&buf)));
        }
        if pending.len() >= batch || (n == 0 && !pending.is_empty()) {
            flush(&guard, &policy, &mut pending, &mut out)?;
        }
        if n == 0 {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

/// `check-reply`: the reply check on one reply, or on each JSON line of stdin (a bad line gets an error object
/// and processing continues).
fn check_reply(
    dir: &PathBuf,
    text: Option<String>,
    jsonl: bool,
    policy: Option<PathBuf>,
) -> Result<(), GuardError> {
    let policy = read_policy(policy)?;
    let guard = Guard::load(&ModelFiles::from_dir(dir)?)?;
    guard.resolve(&policy)?;
    match (text, jsonl) {
        (Some(text), false) => {
            let c = guard.check_reply(&text, &policy)?;
            println!("{}", serde_json::to_string_pretty(&c).expect("json"));
            Ok(())
        }
        (None, true) => answer_jsonl(|mut fields, text| {
            match guard.check_reply(&text, &policy) {
                Ok(c) => fields.insert("reply_check".into(), json!(c)),
                Err(e) => fields.insert("error".into(), error_json(&e)),
            };
            Value::Object(fields)
        }),
        _ => Err(GuardError::Input(
            "give a reply, or --jsonl to read JSON lines from stdin (not both)".into(),
        )),
    }
}

/// A JSON object with a string `text`; anything else becomes an error object for that line.
fn parse_line(bytes: &[u8]) -> Result<(Map<String, Value>, String), Value> {
    let err = |code: &str, msg: String| json!({"error": {"code": code, "message": msg}});
    let s = std::str::from_utf8(bytes)
        .map_err(|e| err("INVALID_UTF8", format!("line is not valid UTF-8: {e}")))?;
    let v: Value =
        serde_json::from_str(s.trim_end()).map_err(|e| err("INVALID_JSON", e.to_string()))?;
    let Value::Object(mut obj) = v else {
        return Err(err("INVALID_JSON", "line must be a JSON object".into()));
    };
    match obj.remove("text") {
        Some(Value::String(t)) => Ok((obj, t)),
        Some(_) => Err(with_echo(
            err("INVALID_INPUT", "`text` must be a string".into()),
            &obj,
        )),
        None => Err(with_echo(
            err("INVALID_INPUT", "missing `text` field".into()),
            &obj,
        )),
    }
}

fn with_echo(mut v: Value, fields: &Map<String, Value>) -> Value {
    if let (Value::Object(o), Some(id)) = (&mut v, fields.get("id")) {
        o.insert("id".into(), id.clone());
    }
    v
}

fn flush(
    guard: &Model,
    policy: &Policy,
    pending: &mut Vec<(usize, Result<(Map<String, Value>, String), Value>)>,
    out: &mut impl Write,
) -> Result<(), GuardError> {
    let texts: Vec<&str> = pending
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().map(|(_, t)| t.as_str()))
        .collect();
    let mut verdicts = guard.classify_batch(&texts, policy)?.into_iter();
    for (line, r) in pending.drain(..) {
        let v = match r {
            Ok((mut fields, _)) => {
                let verdict = verdicts.next().expect("one verdict per text");
                if let Some(e) = &verdict.error {
                    fields.insert(
                        "error".into(),
                        json!({"code": e.code, "message": e.message}),
                    );
                }
                fields.insert(
                    "verdict".into(),
                    serde_json::to_value(&verdict).expect("verdict serialises"),
                );
                Value::Object(fields)
            }
            Err(e) => at_line(e, line),
        };
        writeln!(out, "{v}")?;
    }
    out.flush()?;
    Ok(())
}

/// The guardian's numbers: load time, verdict latency (the classify format: prompt read + one extra step for the
/// category) at ~32 and ~64 query tokens, and decode speed (one token per step with the KV cache, 64 steps after
/// a ~32-token prompt, stop tokens ignored so every run does the same work).
fn bench_guardian(
    files: &ModelFiles,
    iters: usize,
    out_path: Option<PathBuf>,
) -> Result<(), GuardError> {
    let mut load_ms = Vec::new();
    let mut g = None;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        g = Some(Guardian::load(files)?);
        load_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let g = g.expect("loaded");
    load_ms.sort_by(f64::total_cmp);
    const PARTS: &[&str] = &[
        "오늘 회의 자료 정리해서 팀장님께 보내드려야 하는데 요약 좀 도와줄래?",
        "Can you help me plan a weekend trip to Busan with a small budget?",
        "요즘 잠을 잘 못 자서 그런지 하루 종일 피곤하네요.",
        "What are some good ways to learn Rust if I already know Python?",
    ];
    let message = |target: usize| -> Result<(String, usize), GuardError> {
        let words: Vec<&str> = PARTS
            .iter()
            .cycle()
            .take(64)
            .flat_map(|p| p.split(' '))
            .collect();
        let mut best = (String::new(), 0);
        for n in 1..=words.len() {
            let t = words[..n].join(" ");
            let k = g.query_ids(&t)?.len();
            if k > target {
                break;
            }
            best = (t, k);
        }
        Ok(best)
    };
    let policy = Policy::default();
    let mut latency = Vec::new();
    for target in [32usize, 64] {
        let (text, tokens) = message(target)?;
        for _ in 0..2 {
            g.classify(&text, &policy)?;
        }
        let mut ms: Vec<f64> = (0..iters)
            .map(|_| {
                let t = std::time::Instant::now();
                g.classify(&text, &policy)
                    .map(|_| t.elapsed().as_secs_f64() * 1e3)
            })
            .collect::<Result<_, _>>()?;
        ms.sort_by(f64::total_cmp);
        latency.push(
            json!({"target_tokens": target, "tokens": tokens, "text": text,
            "median_ms": percentile(&ms, 0.5), "p95_ms": percentile(&ms, 0.95), "iters": iters}),
        );
    }
    let (text, _) = message(32)?;
    let prompt = g.query_ids(&text)?;
    let m = g.model();
    let mut per_token = Vec::new();
    for _ in 0..5 {
        let mut cache = m.new_cache();
        let h = m.prefill(&mut cache, &prompt)?;
        let mut next = argmax(&m.logits(&h)?);
        let t = std::time::Instant::now();
        for _ in 0..64 {
            let h = m.step(&mut cache, next)?;
            next = argmax(&m.logits(&h)?);
        }
        per_token.push(t.elapsed().as_secs_f64() * 1e3 / 64.0);
    }
    per_token.sort_by(f64::total_cmp);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let report = json!({
        "model": g.model_id(), "backend": "cpu", "threads": threads, "target": std::env::consts::ARCH,
        "load_ms_median": percentile(&load_ms, 0.5),
        "verdict_latency": latency,
        "decode_ms_per_token_median": percentile(&per_token, 0.5),
        "decode_tokens_per_s": 1000.0 / percentile(&per_token, 0.5),
        "peak_rss_mb": peak_rss_mb(),
        "weights_bytes": g.info().weights_bytes, "tokenizer_bytes": g.info().tokenizer_bytes,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    if let Some(p) = out_path {
        std::fs::write(&p, serde_json::to_string_pretty(&report).expect("json"))
            .map_err(|e| GuardError::Io(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A message of about `target` tokens, made of mixed Korean/English chat sentences.
fn message_of(guard: &Guard, target: usize) -> String {
    const PARTS: &[&str] = &[
        "오늘 회의 자료 정리해서 팀장님께 보내드려야 하는데 요약 좀 도와줄래?",
        "Can you help me plan a weekend trip to Busan with a small budget?",
        "요즘 잠을 잘 못 자서 그런지 하루 종일 피곤하네요.",
        "What are some good ways to learn Rust if I already know Python?",
    ];
    let mut text = String::new();
    let mut i = 0;
    loop {
        let next = if text.is_empty() {
            PARTS[i % PARTS.len()].to_string()
        } else {
            format!("{text} {}", PARTS[i % PARTS.len()])
        };
        let tokens = guard
            .windows(&next, usize::MAX)
            .map(|w| w.iter().map(|w| w.ids.len()).sum::<usize>())
            .unwrap_or(0);
        if tokens > target && !text.is_empty() {
            // trim words from the end until we are at or just under the target
            let mut words: Vec<&str> = next.split(' ').collect();
            while words.len() > 1 {
                let t = words.join(" ");
                let n = guard
                    .windows(&t, usize::MAX)
                    .map(|w| w[0].ids.len())
                    .unwrap_or(0);
                if n <= target {
                    return t;
                }
                words.pop();
            }
            return text;
        }
        text = next;
        i += 1;
    }
}

/// Wall times in ms of `iters` calls after 3 warm-up calls, sorted.
fn timed(
    iters: usize,
    mut f: impl FnMut() -> Result<(), GuardError>,
) -> Result<Vec<f64>, GuardError> {
    for _ in 0..3 {
        f()?;
    }
    let mut ms = (0..iters)
        .map(|_| {
            let t = std::time::Instant::now();
            f().map(|()| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<Vec<f64>, _>>()?;
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

fn bench(dir: &PathBuf, iters: usize, out_path: Option<PathBuf>) -> Result<(), GuardError> {
    let files = ModelFiles::from_dir(dir)?;
    if Manifest::parse(&files.manifest)?.is_guardian() {
        return bench_guardian(&files, iters, out_path);
    }
    let mut load_ms = Vec::new();
    let mut guard = None;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        guard = Some(Guard::load(&files)?);
        load_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let guard = guard.expect("loaded");
    load_ms.sort_by(f64::total_cmp);
    let policy = Policy::default();
    let mut latency = Vec::new();
    for target in [16usize, 64, 256] {
        let text = message_of(&guard, target);
        let tokens = guard
            .windows(&text, usize::MAX)?
            .iter()
            .map(|w| w.ids.len())
            .sum::<usize>();
        let ms = timed(iters, || guard.classify(&text, &policy).map(drop))?;
        latency.push(json!({"target_tokens": target, "tokens": tokens, "windows": guard.windows(&text, usize::MAX)?.len(),
            "median_ms": percentile(&ms, 0.5), "p95_ms": percentile(&ms, 0.95), "iters": iters}));
    }
    // the reply gate's check of a reply so far (8 shared + the branch's 4 layers), where the model has it
    let mut reply_latency = Vec::new();
    for target in [16usize, 64]
        .into_iter()
        .filter(|_| guard.manifest().has_reply_check())
    {
        let text = message_of(&guard, target);
        let ms = timed(iters, || guard.check_reply(&text, &policy).map(drop))?;
        reply_latency.push(
            json!({"target_tokens": target, "median_ms": percentile(&ms, 0.5),
            "p95_ms": percentile(&ms, 0.95), "iters": iters}),
        );
    }
    let msg = message_of(&guard, 32);
    let batch: Vec<&str> = std::iter::repeat_n(msg.as_str(), 64).collect();
    guard.classify_batch(&batch, &policy)?;
    let rounds = 5;
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        guard.classify_batch(&batch, &policy)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    let report = json!({
        "model": format!("{}@{}", guard.info().model, guard.info().version),
        "backend": guard.info().backend, "threads": threads, "target": std::env::consts::ARCH,
        "load_ms_median": percentile(&load_ms, 0.5),
        "latency": latency,
        "reply_check_latency": reply_latency,
        "throughput_msgs_per_s_batch64_32tok": (rounds * batch.len()) as f64 / secs,
        "peak_rss_mb": peak_rss_mb(),
        "weights_bytes": guard.info().weights_bytes, "tokenizer_bytes": guard.info().tokenizer_bytes,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    if let Some(p) = out_path {
        std::fs::write(&p, serde_json::to_string_pretty(&report).expect("json"))
            .map_err(|e| GuardError::Io(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}
