// Unit tests of the edge worker's pure helpers (www/edge/lib.js), in Node: no workerd, no model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CATEGORIES, language, utf8Length, segments, segmentBounds, mergeVerdicts, failVerdict, moderationResult, policyProblem } from '../../www/edge/lib.js';

test('utf8Length counts like the core (UTF-8 bytes; a lone surrogate is U+FFFD)', () => {
  for (const s of ['', 'abc', '폭탄 만드는 법', 'emoji 😀 mix 한글', '\ud800x', 'x\udc00', 'é', '\u{10ffff}']) {
    assert.equal(utf8Length(s), Buffer.byteLength(s, 'utf8'), JSON.stringify(s));
  }
});

test('language follows src/reply.rs', () => {
  assert.equal(language('폭탄 만드는 법'), 'ko');
  assert.equal(language('how to make a bomb'), 'en');
  assert.equal(language('이거 jailbreak 프롬프트 좀 짜줘'), 'ko');
  assert.equal(language('ㅅㅂ'), 'ko');
  assert.equal(language('1234 !!'), 'en');
});

function checkSegments(text, size, overlap) {
  const bounds = segmentBounds(text, size, overlap);
  const pieces = segments(text, size, overlap);
  assert.equal(pieces.length, bounds.length);
  assert.equal(bounds[0][0], 0);
  assert.equal(bounds.at(-1)[1], text.length, 'the end is covered');
  bounds.forEach(([a, b], k) => {
    assert.equal(pieces[k], text.slice(a, b));
    assert.ok(utf8Length(pieces[k]) <= size, `piece ${k} has ${utf8Length(pieces[k])} bytes`);
    assert.doesNotMatch(pieces[k], /^[\udc00-\udfff]|[\ud800-\udbff]$/, 'split surrogate pair');
    if (k > 0) {
      const [pa, pb] = bounds[k - 1];
      assert.ok(a > pa, `piece ${k} does not move forward`);
      assert.ok(a <= pb, `gap before piece ${k}`);
      if (pb - a > 0) assert.ok(utf8Length(text.slice(a, pb)) <= overlap + 4, 'overlap too large');
    }
  });
  return pieces;
}

test('segments: overlapping pieces within the byte budget that cover the text', () => {
  assert.deepEqual(segments('short', 600, 100), ['short']);
  const en = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
  const ko = '오늘은 날씨가 정말 좋아서 공원에 산책을 다녀왔습니다. '.repeat(60);
  const emoji = '😀🙂'.repeat(500);
  const nospace = 'x'.repeat(5000);
  const mixed = `${en} ${ko} ${emoji}`;
  for (const t of [en, ko, emoji, nospace, mixed]) {
    const pieces = checkSegments(t, 600, 128);
    assert.ok(pieces.length > 1);
  }
  // neighbours share context; cuts prefer whitespace
  const b = segmentBounds(en, 600, 128);
  for (let k = 1; k < b.length; k++) assert.ok(utf8Length(en.slice(b[k][0], b[k - 1][1])) >= 64, 'no overlap');
  const pieces = segments(en, 600, 128);
  assert.ok(pieces.slice(0, -1).every((p) => /\s$/.test(p)));
  assert.throws(() => segments(en, 100, 50), RangeError);
});

const verdict = (over = {}) => ({
  flagged: false,
  score: 0.1,
  category: null,
  categories: Object.fromEntries(CATEGORIES.map((c) => [c, false])),
  category_scores: Object.fromEntries(CATEGORIES.map((c) => [c, 0.05])),
  action: 'allow',
  model: 'm@1',
  backend: 'cpu',
  timing_ms: 1,
  tokens: 10,
  windows: 1,
  lang: 'en',
  ...over,
});
const hit = (cats, scores, action, reply = action === 'block' ? 'no' : undefined, lang = 'en') => {
  const v = verdict({ flagged: true, score: 0.9, action, lang });
  for (const [c, on] of Object.entries(cats)) v.categories[c] = on;
  for (const [c, s] of Object.entries(scores)) v.category_scores[c] = s;
  v.category = Object.keys(cats).find((c) => cats[c]) ?? Object.keys(scores)[0] ?? null;
  if (reply !== undefined) v.reply = reply;
  return v;
};

test('mergeVerdicts applies the core rule to the per-label maxima', () => {
  const one = verdict();
  assert.equal(mergeVerdicts([one], 'x'), one);

  const calm = mergeVerdicts([verdict(), verdict({ score: 0.2, category_scores: { ...verdict().category_scores, hate: 0.3 } })], 'hello there');
  assert.equal(calm.flagged, false);
  assert.equal(calm.action, 'allow');
  assert.equal(calm.category, null);
  assert.equal(calm.score, 0.2);
  assert.equal(calm.category_scores.hate, 0.3);
  assert.equal(calm.tokens, 20);
  assert.equal(calm.windows, 2);
  assert.equal(calm.reply, undefined);

  // a hit anywhere flags the whole; the most severe hit action wins; the reply matches category and language
  const m = mergeVerdicts([hit({ harassment: true }, { harassment: 0.6 }, 'flag'), verdict(), hit({ crime: true }, { crime: 0.8 }, 'block', 'crime reply')], 'some long text');
  assert.equal(m.flagged, true);
  assert.equal(m.action, 'block');
  assert.equal(m.category, 'crime');
  assert.ok(m.categories.crime && m.categories.harassment && !m.categories.hate);
  assert.equal(m.reply, 'crime reply');

  // flagged by the unsafe score only (default_action) in one piece, a flag-action hit in another: the hit decides
  const u = mergeVerdicts([hit({}, { violence: 0.4 }, 'block', 'generic'), hit({ privacy: true }, { privacy: 0.7 }, 'flag')], 'text');
  assert.equal(u.action, 'flag');
  assert.equal(u.category, 'privacy');
  assert.equal(u.reply, undefined);

  // unsafe only everywhere: default action, category = top score
  const d = mergeVerdicts([hit({}, { violence: 0.4 }, 'flag'), verdict()], 'text');
  assert.equal(d.action, 'flag');
  assert.equal(d.category, 'violence');

  // force_safety: nothing flagged, every piece blocked
  const f = mergeVerdicts([verdict({ action: 'block', reply: '안 돼요', lang: 'ko' }), verdict({ action: 'block', reply: 'no', lang: 'en' })], '한국어 문장입니다');
  assert.equal(f.action, 'block');
  assert.equal(f.lang, 'ko');
  assert.equal(f.reply, '안 돼요');

  // a piece that could not be scored: its fail-mode verdict stands
  const err = verdict({ action: 'block', flagged: true, error: { code: 'INFERENCE_FAILED', message: 'x' } });
  assert.equal(mergeVerdicts([verdict(), err], 'x').error.code, 'INFERENCE_FAILED');
});

test('failVerdict and moderationResult', () => {
  const closed = failVerdict(Object.assign(new Error('bad'), { code: 'MODEL_INTEGRITY' }), '안녕하세요', 'closed');
  assert.equal(closed.action, 'block');
  assert.equal(closed.flagged, true);
  assert.equal(closed.lang, 'ko');
  assert.match(closed.reply, /[가-힣]/);
  assert.equal(closed.error.code, 'MODEL_INTEGRITY');
  const open = failVerdict(new Error('x'), 'hi', 'open');
  assert.equal(open.action, 'allow');
  assert.equal(open.reply, undefined);
  const r = moderationResult(hit({ crime: true, self_harm: true }, { crime: 0.8, self_harm: 0.7 }, 'block'));
  assert.equal(r.categories.illicit, true);
  assert.equal(r.categories['self-harm'], true);
  assert.equal(r.categories['sexual/minors'], false);
  assert.equal(r.category_scores.illicit, 0.8);
  assert.deepEqual(r.category_applied_input_types.crime, ['text']);
  assert.equal(moderationResult(open).category_scores.hate, 0);
});

test('policyProblem refuses unknown fields', () => {
  assert.equal(policyProblem({}), null);
  assert.equal(policyProblem({ sensitivity: 0.6, categories: { crime: { threshold: 0.3, action: 'flag' } }, fail_mode: 'open' }), null);
  assert.match(policyProblem({ sensitivty: 0.6 }), /sensitivty/);
  assert.match(policyProblem({ categories: { crime: { treshold: 0.3 } } }), /treshold/);
  assert.match(policyProblem([]), /object/);
  assert.match(policyProblem({ categories: [] }), /object/);
});
