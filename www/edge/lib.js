// Pure helpers of the edge worker (no wasm, no bindings): unit-tested in Node by tests/edge/lib.test.mjs.

export const CATEGORIES = ['hate', 'harassment', 'violence', 'sexual', 'sexual_minors', 'self_harm', 'crime', 'privacy', 'prompt_attack'];

/** OpenAI moderation category names that mean the same as one of ours (docs/TAXONOMY.md). OpenAI's sub-categories
 * (hate/threatening, self-harm/intent, ...) are not scored separately, so they are not reported. */
export const OPENAI_ALIASES = { 'sexual/minors': 'sexual_minors', 'self-harm': 'self_harm', illicit: 'crime' };

export function isPlainObject(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
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
