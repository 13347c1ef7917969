// Unit tests of the edge worker's pure helpers (www/edge/lib.js), in Node: no workerd, no model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CATEGORIES, utf8Length, moderationResult } from '../../www/edge/lib.js';
import { initWasm, checkPolicy, unavailableVerdict } from '../../pkg/index.js';

await initWasm();

test('utf8Length counts like the core (UTF-8 bytes; a lone surrogate is U+FFFD)', () => {
  for (const s of ['', 'abc', '폭탄 만드는 법', 'emoji 😀 mix 한글', '\ud800x', 'x\udc00', 'é', '\u{10ffff}']) {
    assert.equal(utf8Length(s), Buffer.byteLength(s, 'utf8'), JSON.stringify(s));
  }
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

test('the core answers when no model could load (unavailableVerdict) and moderationResult maps it', () => {
  const closed = unavailableVerdict(Object.assign(new Error('bad'), { code: 'MODEL_INTEGRITY' }), '안녕하세요', { fail_mode: 'closed' }, CATEGORIES);
  assert.equal(closed.action, 'block');
  assert.equal(closed.flagged, true);
  assert.equal(closed.lang, 'ko');
  assert.match(closed.reply, /[가-힣]/);
  assert.deepEqual(closed.error, { code: 'MODEL_INTEGRITY', message: 'bad' }, 'the load error keeps its own code');
  assert.deepEqual(Object.keys(closed.categories).sort(), [...CATEGORIES].sort());
  const open = unavailableVerdict(new Error('x'), 'hi', { fail_mode: 'open' }, CATEGORIES);
  assert.equal(open.action, 'allow');
  assert.equal(open.reply, undefined);
  assert.equal(open.error.code, 'INTERNAL');
  const r = moderationResult(hit({ crime: true, self_harm: true }, { crime: 0.8, self_harm: 0.7 }, 'block'));
  assert.equal(r.categories.illicit, true);
  assert.equal(r.categories['self-harm'], true);
  assert.equal(r.categories['sexual/minors'], false);
  assert.equal(r.category_scores.illicit, 0.8);
  assert.deepEqual(r.category_applied_input_types.crime, ['text']);
  assert.equal(moderationResult(open).category_scores.hate, 0);
});

test('checkPolicy (the core) refuses unknown fields and bad values', () => {
  checkPolicy({});
  checkPolicy({ sensitivity: 0.6, categories: { crime: { threshold: 0.3, action: 'flag' } }, fail_mode: 'open' });
  assert.throws(() => checkPolicy({ sensitivty: 0.6 }), (e) => e.code === 'INVALID_POLICY' && /sensitivty/.test(e.message));
  assert.throws(() => checkPolicy({ categories: { crime: { treshold: 0.3 } } }), /treshold/);
  assert.throws(() => checkPolicy({ categories: { crime: { threshold: 3 } } }), (e) => e.code === 'INVALID_POLICY');
  assert.throws(() => checkPolicy([]), (e) => e.code === 'INVALID_POLICY');
});
