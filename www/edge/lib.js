// Pure helpers of the edge worker (no wasm, no bindings): unit-tested in Node by tests/edge/lib.test.mjs.

export const CATEGORIES = ['hate', 'harassment', 'violence', 'sexual', 'sexual_minors', 'self_harm', 'crime', 'privacy', 'prompt_attack'];

/** OpenAI moderation category names that mean the same as one of ours (docs/TAXONOMY.md). OpenAI's sub-categories
 * (hate/threatening, self-harm/intent, ...) are not scored separately, so they are not reported. */
export const OPENAI_ALIASES = { 'sexual/minors': 'sexual_minors', 'self-harm': 'self_harm', illicit: 'crime' };

const POLICY_KEYS = ['sensitivity', 'unsafe_threshold', 'default_action', 'categories', 'fail_mode', 'max_input_bytes', 'force_safety'];
const RULE_KEYS = ['threshold', 'action'];

export function isPlainObject(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

/** Unknown policy fields are refused (a typo must not silently weaken a policy). Values are checked by the core.
 * Returns an error message or null. */
export function policyProblem(p) {
  if (!isPlainObject(p)) return 'the policy must be a JSON object';
  const unknown = Object.keys(p).find((k) => !POLICY_KEYS.includes(k));
  if (unknown) return `unknown policy field \`${unknown}\` (known: ${POLICY_KEYS.join(', ')})`;
  if (p.categories !== undefined) {
    if (!isPlainObject(p.categories)) return '`categories` must be an object';
    for (const [c, rule] of Object.entries(p.categories)) {
      if (!isPlainObject(rule)) return `categories.${c} must be an object`;
      const bad = Object.keys(rule).find((k) => !RULE_KEYS.includes(k));
      if (bad) return `unknown field \`${bad}\` in categories.${c} (known: ${RULE_KEYS.join(', ')})`;
    }
  }
  return null;
}

const HANGUL = /[\uAC00-\uD7A3\u1100-\u11FF\u3130-\u318F]/u;
const ALPHA = /\p{Alphabetic}/u;

/** Same rule as the Rust core (src/reply.rs): `ko` when Hangul letters are at least a fifth of the letters. */
export function language(text) {
  let hangul = 0;
  let letters = 0;
  for (const c of text) {
    if (!ALPHA.test(c)) continue;
    letters++;
    if (HANGUL.test(c)) hangul++;
  }
  return letters > 0 && hangul * 5 >= letters ? 'ko' : 'en';
}

function width(cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4; // a lone surrogate becomes U+FFFD: 3
}

/** UTF-8 length of a JS string (what the core's max_input_bytes counts). */
export function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
        continue;
      }
    }
    n += width(c);
  }
  return n;
}

const SPACE = /\s/u;

/**
 * Split a long text into overlapping pieces of at most `size` UTF-8 bytes (cut at whitespace where one is near the
 * end, never inside a surrogate pair); consecutive pieces share about `overlap` bytes so nothing is judged without
 * its neighbourhood. A text within `size` is returned as is.
 */
export function segments(text, size, overlap) {
  return segmentBounds(text, size, overlap).map(([a, b]) => text.slice(a, b));
}

/** [start, end) UTF-16 offsets of the pieces `segments` returns. */
export function segmentBounds(text, size, overlap) {
  if (!(size > 0) || overlap < 0 || overlap * 2 >= size) throw new RangeError('segments: need size > 2 * overlap >= 0');
  if (utf8Length(text) <= size) return [[0, text.length]];
  const out = [];
  let start = 0;
  for (;;) {
    let bytes = 0;
    let i = start;
    let cut = -1;
    while (i < text.length) {
      const cp = text.codePointAt(i);
      const w = cp > 0xffff ? 4 : width(cp);
      if (bytes + w > size) break;
      bytes += w;
      i += cp > 0xffff ? 2 : 1;
      if (bytes > size * 0.75 && SPACE.test(text[i - 1])) cut = i; // after the last space in the last quarter
    }
    if (i >= text.length) {
      out.push([start, text.length]);
      return out;
    }
    const end = cut > start ? cut : i;
    out.push([start, end]);
    // step back about `overlap` bytes, to a whitespace boundary where there is one
    let back = end;
    let b = 0;
    let space = -1;
    while (back > start + 1 && b < overlap) {
      back--;
      const c = text.charCodeAt(back);
      if (c >= 0xdc00 && c <= 0xdfff && back > start + 1 && text.charCodeAt(back - 1) >= 0xd800 && text.charCodeAt(back - 1) <= 0xdbff) {
        back--;
        b += 4;
      } else b += width(c);
      if (SPACE.test(text[back])) space = back + 1;
    }
    const next = space > start && space < end ? space : back;
    start = next > start ? next : end; // always moves forward
  }
}

const SEVERITY = { allow: 0, flag: 1, block: 2 };

/**
 * The verdict for a whole text from the verdicts of its pieces, with the core's rule (src/verdict.rs) applied to the
 * per-label maxima: a label is over its threshold in the whole iff it is in some piece, so categories and flagged
 * are ORs; the category is the highest-scoring flagged one (or the top one); the action is the most severe of the
 * pieces with a flagged category (or of a flagged piece without one, or the pieces' common action when nothing is
 * flagged, e.g. under force_safety).
 */
export function mergeVerdicts(vs, text) {
  if (vs.length === 1) return vs[0];
  const failed = vs.find((v) => v.error);
  if (failed) return { ...failed, lang: language(text) };
  const names = Object.keys(vs[0].categories);
  const categories = {};
  const scores = {};
  for (const c of names) {
    categories[c] = vs.some((v) => v.categories[c]);
    scores[c] = Math.max(...vs.map((v) => v.category_scores[c] ?? 0));
  }
  const flagged = vs.some((v) => v.flagged);
  const hits = names.filter((c) => categories[c]);
  const pick = (list) => list.reduce((a, c) => (scores[c] > scores[a] ? c : a));
  const category = !flagged ? null : pick(hits.length ? hits : names);
  let action;
  if (!flagged) action = vs[0].action;
  else {
    const withHits = vs.filter((v) => names.some((c) => v.categories[c]));
    const from = withHits.length ? withHits : vs.filter((v) => v.flagged);
    action = from.map((v) => v.action).reduce((a, b) => (SEVERITY[b] > SEVERITY[a] ? b : a));
  }
  const lang = language(text);
  const out = {
    ...vs[0],
    flagged,
    score: Math.max(...vs.map((v) => v.score)),
    category,
    categories,
    category_scores: scores,
    action,
    timing_ms: vs.reduce((s, v) => s + (v.timing_ms ?? 0), 0),
    tokens: vs.reduce((s, v) => s + (v.tokens ?? 0), 0),
    windows: vs.reduce((s, v) => s + (v.windows ?? 0), 0),
    lang,
  };
  delete out.reply;
  if (action === 'block') {
    const blocking = vs.filter((v) => v.reply !== undefined);
    const best =
      blocking.find((v) => v.category === category && v.lang === lang) ??
      blocking.find((v) => v.category === category) ??
      blocking.find((v) => v.lang === lang) ??
      blocking[0];
    if (best) out.reply = best.reply;
  }
  return out;
}

const FAIL_REPLY = {
  ko: '이 요청은 안전 정책에 따라 도와드리기 어렵습니다. 다른 방식으로 도움이 필요하시면 말씀해 주세요.',
  en: "I can't help with this request under the safety policy, but I'm happy to help with something else.",
};

/** The fail-mode verdict when there is no guard to ask (the model could not load); shaped as the core's. */
export function failVerdict(error, text, failMode) {
  const blocked = failMode !== 'open';
  const lang = language(text);
  return {
    flagged: blocked,
    score: blocked ? 1 : 0,
    category: null,
    categories: Object.fromEntries(CATEGORIES.map((c) => [c, false])),
    category_scores: {},
    action: blocked ? 'block' : 'allow',
    model: 'unavailable',
    backend: 'cpu',
    timing_ms: 0,
    tokens: 0,
    windows: 0,
    lang,
    ...(blocked ? { reply: FAIL_REPLY[lang] } : {}),
    error: { code: String(error?.code ?? 'INTERNAL'), message: String(error?.message ?? error) },
  };
}

/** One result of the OpenAI moderation response, with our fields (action, category, score, lang, reply, error). */
export function moderationResult(v) {
  const categories = {};
  const scores = {};
  for (const c of CATEGORIES) {
    categories[c] = v.categories?.[c] ?? false;
    scores[c] = v.category_scores?.[c] ?? 0;
  }
  for (const [alias, c] of Object.entries(OPENAI_ALIASES)) {
    categories[alias] = categories[c];
    scores[alias] = scores[c];
  }
  const out = {
    flagged: v.flagged,
    categories,
    category_scores: scores,
    category_applied_input_types: Object.fromEntries(Object.keys(categories).map((c) => [c, ['text']])),
    action: v.action,
    category: v.category ?? null,
    score: v.score,
    lang: v.lang,
  };
  if (v.reply !== undefined) out.reply = v.reply;
  if (v.error) out.error = v.error;
  return out;
}
