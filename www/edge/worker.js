// slm-guard edge worker: an OpenAI-compatible guard in front of an LLM API (Cloudflare Workers / workerd).
//
//   POST /v1/moderations       the OpenAI moderation API (input: string | string[]), answered by the guard
//   POST /v1/chat/completions  user messages checked; blocked -> OpenAI-style 400 error, never sent upstream;
//                              allowed -> forwarded to UPSTREAM_URL, the response streamed back unchanged
//   GET  /healthz              liveness + model state (does not load the model)
//   GET  /readyz               loads the model if needed: 200 when it is loaded, 503 when it cannot be
//
// The wasm is imported as a module (Workers forbid compiling wasm from bytes at run time). The model files are
// fetched once per isolate from the MODEL binding (static assets or a service) or from MODEL_URL, handed to the
// Rust core as bytes (it checks every sha256 against the manifest) and kept in a module-level variable.
// Configuration (all strings, all optional except UPSTREAM_URL for the chat endpoint): see README.md.
import { Guard, initWasm, checkPolicy, unavailableVerdict } from '../../pkg/index.js';
import wasm from '../../pkg/slm_guard_bg.wasm';
import { CATEGORIES, isPlainObject, utf8Length, moderationResult } from './lib.js';
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'trailers', 'transfer-encoding', 'upgrade', 'proxy-connection'];
const POLICY_HEADER = 'x-slm-guard-policy';
const DEFAULTS = {
  MAX_BODY_BYTES: 1 << 20, // request body (chat bodies may carry images)
  MAX_TEXT_BYTES: 16384, // text classified per request, all inputs / checked messages together (CPU time)
  MAX_INPUTS: 32, // moderation inputs per request
  UPSTREAM_TIMEOUT_MS: 60_000, // until the upstream's response head
  LOAD_RETRY_MS: 10_000, // a failed model load is retried after this long
};
const WEIGHTS = 'model.gguf';
const PARTS_INDEX = 'model.gguf.parts.json'; // written by prepare-model.mjs when the weights are split (<25 MiB assets)

// ---------------------------------------------------------------------------------------------------------------
// Errors in the OpenAI shape

class HttpError extends Error {
  constructor(status, code, message, { type, param = null, headers, extra } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type ?? (status >= 500 ? 'server_error' : 'invalid_request_error');
    this.param = param;
    this.headers = headers;
    this.extra = extra;
  }
}

function json(body, status = 200, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json; charset=utf-8', ...headers } });
}

function errorResponse(e) {
  const { status, code, message, type, param, headers, extra } = e;
  return json({ error: { message, type, code, param, ...extra } }, status, headers);
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration (env vars arrive as strings; unset fromEnvironment bindings are null)

function str(v) {
  return typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined;
}

function int(env, name) {
  const v = str(env[name]);
  if (v === undefined) return DEFAULTS[name];
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new HttpError(500, 'invalid_config', `${name} must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

let configCache = null; // { env, value }: env objects are stable per isolate, so parse once

function config(env) {
  if (configCache?.env === env) return configCache.value;
  let policy = {};
  const rawPolicy = str(env.POLICY);
  if (rawPolicy) {
    try {
      policy = JSON.parse(rawPolicy);
    } catch (e) {
      throw new HttpError(500, 'invalid_config', `POLICY is not JSON: ${e.message}`);
    }
    try {
      checkPolicy(policy);
    } catch (e) {
      throw new HttpError(500, 'invalid_config', `POLICY: ${e.message}`);
    }
  }
  const failMode = str(env.FAIL_MODE)?.toLowerCase();
  if (failMode !== undefined && failMode !== 'open' && failMode !== 'closed') {
    throw new HttpError(500, 'invalid_config', `FAIL_MODE must be "open" or "closed", got ${JSON.stringify(env.FAIL_MODE)}`);
  }
  const value = {
    policy,
    failMode: failMode ?? policy.fail_mode ?? 'closed',
    maxBodyBytes: int(env, 'MAX_BODY_BYTES'),
    maxInputs: int(env, 'MAX_INPUTS'),
    upstreamTimeoutMs: int(env, 'UPSTREAM_TIMEOUT_MS'),
    loadRetryMs: int(env, 'LOAD_RETRY_MS'),
    maxTextBytes: int(env, 'MAX_TEXT_BYTES'),
    upstream: str(env.UPSTREAM_URL),
    allowPolicyHeader: /^(1|true|yes)$/i.test(str(env.ALLOW_POLICY_HEADER) ?? ''),
    checkRoles: (str(env.CHECK_ROLES) ?? 'user').split(',').map((s) => s.trim()).filter(Boolean),
  };
  configCache = { env, value };
  return value;
}

/** The policy for one request: POLICY, then (only when ALLOW_POLICY_HEADER) the request's header; FAIL_MODE wins
 * over POLICY's fail_mode, a header's fail_mode over both. */
function requestPolicy(request, cfg) {
  let override = {};
  const raw = request.headers.get(POLICY_HEADER);
  if (raw && cfg.allowPolicyHeader) {
    try {
      override = JSON.parse(raw);
    } catch (e) {
      throw new HttpError(400, 'invalid_policy', `${POLICY_HEADER} is not JSON: ${e.message}`, { param: POLICY_HEADER });
    }
    try {
      checkPolicy(override);
    } catch (e) {
      throw new HttpError(400, 'invalid_policy', `${POLICY_HEADER}: ${e.message}`, { param: POLICY_HEADER });
    }
  }
  const policy = { ...cfg.policy, ...override, fail_mode: override.fail_mode ?? cfg.failMode };
  return { policy, fromHeader: raw && cfg.allowPolicyHeader };
}

// ---------------------------------------------------------------------------------------------------------------
// The model: fetched once per isolate; concurrent first requests share one promise

const state = { guard: null, loading: null, error: null, failedAt: 0, loads: 0, loadMs: null, memory: null };

async function fetchFile(source, name, { optional = false } = {}) {
  let res;
  try {
    res = await source(name);
  } catch (e) {
    throw Object.assign(new Error(`cannot fetch model file ${name}: ${e.message}`), { code: 'NETWORK' });
  }
  if (optional && res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw Object.assign(new Error(`cannot fetch model file ${name}: HTTP ${res.status}`), { code: 'NETWORK' });
  }
  return res;
}

/** Read a body into `out` at `offset`; returns the end offset. Reading straight into one preallocated buffer (not a
 * chunk list joined at the end) keeps the peak at one copy of the weights. */
async function readInto(res, name, out, offset) {
  const reader = res.body.getReader();
  let o = offset;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (o + value.byteLength > out.byteLength) {
      await reader.cancel().catch(() => {});
      throw Object.assign(new Error(`model file ${name} is larger than announced`), { code: 'MODEL_WEIGHTS' });
    }
    out.set(value, o);
    o += value.byteLength;
  }
  return o;
}

async function readFile(res, name) {
  const length = Number(res.headers.get('content-length'));
  const encoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity';
  if (encoded || !Number.isSafeInteger(length) || length <= 0 || !res.body) return new Uint8Array(await res.arrayBuffer());
  const out = new Uint8Array(length);
  const end = await readInto(res, name, out, 0);
  if (end !== length) throw Object.assign(new Error(`model file ${name} is truncated: ${end} of ${length} bytes`), { code: 'MODEL_WEIGHTS' });
  return out;
}

async function loadWeights(source) {
  const whole = await fetchFile(source, WEIGHTS, { optional: true });
  if (whole) return readFile(whole, WEIGHTS);
  // split weights (static assets are limited to 25 MiB each): [{name, bytes}] in order; the Rust core checks the
  // sha256 of the whole against the manifest
  const index = await fetchFile(source, PARTS_INDEX);
  let parts;
  try {
    ({ parts } = await index.json());
  } catch (e) {
    throw Object.assign(new Error(`${PARTS_INDEX} is not JSON: ${e.message}`), { code: 'MODEL_MANIFEST' });
  }
  if (!Array.isArray(parts) || parts.length === 0 || parts.some((p) => typeof p?.name !== 'string' || !Number.isSafeInteger(p.bytes) || p.bytes <= 0 || /[/\\]|^\./.test(p.name))) {
    throw Object.assign(new Error(`${PARTS_INDEX} must list {name, bytes} parts`), { code: 'MODEL_MANIFEST' });
  }
  const out = new Uint8Array(parts.reduce((s, p) => s + p.bytes, 0));
  let offset = 0;
  for (const p of parts) {
    const res = await fetchFile(source, p.name);
    if ((res.headers.get('content-encoding') ?? 'identity') !== 'identity') {
      const b = new Uint8Array(await res.arrayBuffer());
      if (b.byteLength !== p.bytes) throw Object.assign(new Error(`model part ${p.name} has ${b.byteLength} bytes, expected ${p.bytes}`), { code: 'MODEL_WEIGHTS' });
      out.set(b, offset);
      offset += b.byteLength;
      continue;
    }
    const end = await readInto(res, p.name, out.subarray(0, offset + p.bytes), offset);
    if (end - offset !== p.bytes) throw Object.assign(new Error(`model part ${p.name} has ${end - offset} bytes, expected ${p.bytes}`), { code: 'MODEL_WEIGHTS' });
    offset = end;
  }
  return out;
}

function modelSource(env) {
  const url = str(env.MODEL_URL);
  if (url) {
    const base = new URL(url.replace(/\/?$/, '/'));
    return (name) => fetch(new URL(name, base));
  }
  if (env.MODEL && typeof env.MODEL.fetch === 'function') {
    // static-assets binding or a service (workerd disk directory): files at the root
    return (name) => env.MODEL.fetch(new Request(`https://model.invalid/${name}`));
  }
  return null;
}

async function loadGuard(env) {
  const source = modelSource(env);
  if (!source) throw Object.assign(new Error('no model source: set MODEL_URL or bind MODEL (static assets or a service)'), { code: 'IO' });
  const t0 = Date.now();
  state.memory ??= (await initWasm(wasm))?.memory ?? null; // the wasm linear memory, for /healthz
  const [manifest, tokenizer] = await Promise.all(
    ['manifest.json', 'tokenizer.json'].map(async (n) => readFile(await fetchFile(source, n), n)),
  );
  const weights = await loadWeights(source);
  // verification (sha256 against the manifest), parsing and inference are all in the Rust core
  const guard = await Guard.load({ model: { manifest, weights, tokenizer }, wasm, cache: false });
  state.loadMs = Date.now() - t0;
  return guard;
}

/** The loaded guard, or a thrown load error (remembered for LOAD_RETRY_MS so a broken model is not refetched on
 * every request). */
function getGuard(env, cfg) {
  if (state.guard) return Promise.resolve(state.guard);
  if (state.error && Date.now() - state.failedAt < cfg.loadRetryMs) return Promise.reject(state.error);
  if (!state.loading) {
    state.loads++;
    state.loading = loadGuard(env).then(
      (g) => {
        state.guard = g;
        state.error = null;
        state.loading = null;
        return g;
      },
      (e) => {
        state.error = e;
        state.failedAt = Date.now();
        state.loading = null;
        console.error(`slm-guard: model load failed: ${e.code ?? ''} ${e.message}`);
        throw e;
      },
    );
  }
  return state.loading;
}

// ---------------------------------------------------------------------------------------------------------------
// Verdicts

/** Verdicts for texts under the request's policy. Client mistakes (too long, bad policy) are 400s; a model that
 * cannot load or run gives the fail-mode verdicts (each with `error`). */
async function classify(env, cfg, texts, { policy, fromHeader }, params) {
  const limit = Number.isSafeInteger(policy.max_input_bytes) && policy.max_input_bytes > 0 ? policy.max_input_bytes : 262144;
  let total = 0;
  texts.forEach((t, i) => {
    const n = utf8Length(t);
    if (n > limit) throw new HttpError(400, 'input_too_long', `${params[i]} is ${n} bytes; the limit is ${limit} bytes`, { param: params[i] });
    total += n;
  });
  if (total > cfg.maxTextBytes) {
    throw new HttpError(400, 'input_too_long', `the request has ${total} bytes of text to check; the limit is ${cfg.maxTextBytes} bytes`, { param: params.length === 1 ? params[0] : null });
  }
  let guard;
  try {
    guard = await getGuard(env, cfg);
  } catch (e) {
    return texts.map((t) => unavailableVerdict(e, t, { fail_mode: policy.fail_mode }, CATEGORIES));
  }
  try {
    // The core windows long texts and bounds each forward pass (wasm memory never shrinks).
    return await guard.classifyBatch(texts, policy);
  } catch (e) {
    if (e.code === 'INVALID_POLICY') {
      if (fromHeader) throw new HttpError(400, 'invalid_policy', e.message, { param: POLICY_HEADER });
      throw new HttpError(500, 'invalid_config', `POLICY: ${e.message}`);
    }
    if (e.code === 'INPUT_TOO_LONG' || e.code === 'INVALID_INPUT') throw new HttpError(400, 'invalid_input', e.message);
    console.error(`slm-guard: classification failed: ${e.code ?? ''} ${e.message}`);
    return texts.map((t) => {
      try {
        return guard.failVerdict(e, t, policy);
      } catch {
        return unavailableVerdict(e, t, { fail_mode: policy.fail_mode }, CATEGORIES);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Requests

async function readJson(request, cfg) {
  const type = (request.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpError(415, 'unsupported_media_type', `Content-Type must be application/json, got ${JSON.stringify(type || 'none')}`, { param: 'content-type' });
  }
  const announced = request.headers.get('content-length');
  if (announced !== null && Number(announced) > cfg.maxBodyBytes) {
    throw new HttpError(413, 'request_too_large', `request body is ${announced} bytes; the limit is ${cfg.maxBodyBytes} bytes`);
  }
  const chunks = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > cfg.maxBodyBytes) {
        await reader.cancel().catch(() => {});
        throw new HttpError(413, 'request_too_large', `request body is over the limit of ${cfg.maxBodyBytes} bytes`);
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let o = 0;
  for (const c of chunks) {
    bytes.set(c, o);
    o += c.byteLength;
  }
  let body;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new HttpError(400, 'invalid_json', `request body is not valid JSON: ${e.message}`);
  }
  if (!isPlainObject(body)) throw new HttpError(400, 'invalid_json', 'request body must be a JSON object');
  return { body, bytes };
}

async function moderations(request, env, cfg) {
  const policy = requestPolicy(request, cfg);
  const { body } = await readJson(request, cfg);
  const { input } = body;
  let texts;
  let params;
  if (typeof input === 'string') {
    texts = [input];
    params = ['input'];
  } else if (Array.isArray(input) && input.length > 0 && input.every(isPlainObject)) {
    // the multi-modal form ([{type: 'text', text}, {type: 'image_url', ...}]): one input, one result
    const parts = [];
    input.forEach((p, j) => {
      if (p.type === 'text' && typeof p.text === 'string') parts.push(p.text);
      else if (p.type !== 'image_url') {
        throw new HttpError(400, 'invalid_input', `input[${j}] must be {type: 'text', text: string} or an image_url part`, { param: `input[${j}]` });
      }
    });
    if (parts.length === 0) throw new HttpError(400, 'unsupported_input', 'this guard checks text only: the input has no text part', { param: 'input' });
    texts = [parts.join('\n')];
    params = ['input'];
  } else if (Array.isArray(input)) {
    if (input.length === 0) throw new HttpError(400, 'invalid_input', "'input' must not be an empty array", { param: 'input' });
    if (input.length > cfg.maxInputs) {
      throw new HttpError(400, 'too_many_inputs', `'input' has ${input.length} items; the limit is ${cfg.maxInputs}`, { param: 'input' });
    }
    const bad = input.findIndex((x) => typeof x !== 'string');
    if (bad >= 0) throw new HttpError(400, 'invalid_input', `input[${bad}] must be a string`, { param: `input[${bad}]` });
    texts = input;
    params = texts.map((_, i) => `input[${i}]`);
  } else {
    throw new HttpError(400, 'invalid_input', "'input' is required: a string, an array of strings or an array of text parts", { param: 'input' });
  }
  const verdicts = await classify(env, cfg, texts, policy, params);
  return json({ id: `modr-${crypto.randomUUID().replaceAll('-', '')}`, model: modelName(), results: verdicts.map(moderationResult) });
}

function modelName() {
  const info = state.guard?.info();
  return info ? `${info.model}@${info.version}` : 'slm-guard (model unavailable)';
}

/** Texts of the messages the guard checks (CHECK_ROLES, default user): string content or the 'text' parts. */
function messageTexts(body, cfg) {
  const { messages } = body;
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new HttpError(400, 'invalid_input', "'messages' is required: a non-empty array", { param: 'messages' });
  }
  const texts = [];
  const params = [];
  messages.forEach((m, i) => {
    if (!isPlainObject(m) || typeof m.role !== 'string') {
      throw new HttpError(400, 'invalid_input', `messages[${i}] must be an object with a string 'role'`, { param: `messages[${i}]` });
    }
    const { content } = m;
    let text;
    if (typeof content === 'string') text = content;
    else if (Array.isArray(content)) {
      const parts = [];
      content.forEach((p, j) => {
        if (!isPlainObject(p) || typeof p.type !== 'string') {
          throw new HttpError(400, 'invalid_input', `messages[${i}].content[${j}] must be an object with a string 'type'`, { param: `messages[${i}].content[${j}]` });
        }
        if (p.type === 'text') {
          if (typeof p.text !== 'string') {
            throw new HttpError(400, 'invalid_input', `messages[${i}].content[${j}].text must be a string`, { param: `messages[${i}].content[${j}].text` });
          }
          parts.push(p.text);
        }
      });
      text = parts.join('\n');
    } else if (content === null || content === undefined) text = '';
    else {
      throw new HttpError(400, 'invalid_input', `messages[${i}].content must be a string, an array of parts or null`, { param: `messages[${i}].content` });
    }
    if (cfg.checkRoles.includes(m.role) && text !== '') {
      texts.push(text);
      params.push(`messages[${i}].content`);
    }
  });
  return { texts, params };
}

async function chatCompletions(request, env, cfg) {
  const policy = requestPolicy(request, cfg);
  const { body, bytes } = await readJson(request, cfg);
  const { texts, params } = messageTexts(body, cfg);
  let decision = { action: 'allow' };
  if (texts.length > 0) {
    const verdicts = await classify(env, cfg, texts, policy, params);
    const i = verdicts.findIndex((v) => v.action === 'block');
    if (i >= 0) {
      const v = verdicts[i];
      const flaggedCats = CATEGORIES.filter((c) => v.categories?.[c]);
      if (v.error) {
        // fail-closed: the guard could not run, so nothing is sent
        throw new HttpError(503, 'guard_unavailable', `the safety guard is unavailable (${v.error.code}); the request was not sent`, {
          param: params[i],
          headers: { 'retry-after': '10', 'x-slm-guard-action': 'block' },
          extra: { categories: flaggedCats, category: null, reply: v.reply, guard_error: v.error },
        });
      }
      // the message carries the safe reply too: many clients show only error.message
      const what = v.category ? ` (category: ${v.category})` : '';
      throw new HttpError(400, 'content_policy_violation', `This request was blocked by the safety guard${what}. ${v.reply ?? ''}`.trim(), {
        param: params[i],
        headers: { 'x-slm-guard-action': 'block', ...(v.category ? { 'x-slm-guard-category': v.category } : {}) },
        extra: { categories: flaggedCats, category: v.category ?? null, category_scores: v.category_scores, reply: v.reply, lang: v.lang, model: v.model },
      });
    }
    const flagged = verdicts.find((v) => v.action === 'flag');
    decision = flagged ? { action: 'flag', category: flagged.category } : { action: 'allow' };
    if (verdicts.some((v) => v.error)) decision.error = verdicts.find((v) => v.error).error.code;
  }
  return forward(request, bytes, cfg, decision);
}

/** Headers minus hop-by-hop ones (and those the Connection header names). */
function endToEnd(headers, drop = []) {
  const out = new Headers(headers);
  const named = (headers.get('connection') ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
  for (const h of [...HOP_BY_HOP, ...named, ...drop]) out.delete(h);
  return out;
}

async function forward(request, bytes, cfg, decision) {
  if (!cfg.upstream) throw new HttpError(500, 'upstream_not_configured', 'UPSTREAM_URL is not set');
  const incoming = new URL(request.url);
  const base = new URL(cfg.upstream);
  const target = new URL(base.href.replace(/\/$/, '') + incoming.pathname + incoming.search);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), cfg.upstreamTimeoutMs);
  let res;
  try {
    res = await fetch(target, { method: 'POST', headers: endToEnd(request.headers, ['host', 'content-length', POLICY_HEADER]), body: bytes, signal: abort.signal, redirect: 'manual' });
  } catch (e) {
    if (abort.signal.aborted) {
      throw new HttpError(504, 'upstream_timeout', `the upstream API did not answer within ${cfg.upstreamTimeoutMs} ms`, { type: 'api_error' });
    }
    throw new HttpError(502, 'upstream_unreachable', `cannot reach the upstream API: ${e.message}`, { type: 'api_error' });
  } finally {
    clearTimeout(timer); // headers are in: the body streams without a deadline
  }
  // streamed back as it arrives (SSE included); status and body unchanged, hop-by-hop headers dropped
  const decoded = (res.headers.get('content-encoding') ?? 'identity') !== 'identity'; // fetch() decoded it: length differs
  const headers = endToEnd(res.headers, decoded ? ['content-length'] : []);
  headers.set('x-slm-guard-action', decision.action);
  if (decision.category) headers.set('x-slm-guard-category', decision.category);
  if (decision.error) headers.set('x-slm-guard-error', decision.error);
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

function health(env, cfg, ready) {
  const info = state.guard?.info();
  const body = {
    status: state.guard ? 'ok' : state.error ? 'model_unavailable' : 'not_loaded',
    model: info ? `${info.model}@${info.version}` : null,
    loads: state.loads,
    load_ms: state.loadMs,
    wasm_memory_bytes: state.memory?.buffer.byteLength ?? null,
    fail_mode: cfg.failMode,
    upstream: cfg.upstream ? new URL(cfg.upstream).origin : null,
    ...(state.error ? { error: { code: String(state.error.code ?? 'INTERNAL'), message: state.error.message } } : {}),
  };
  return json(body, ready && !state.guard ? 503 : 200);
}

const ROUTES = {
  '/v1/moderations': { POST: moderations },
  '/v1/chat/completions': { POST: chatCompletions },
  '/healthz': { GET: (req, env, cfg) => health(env, cfg, false) },
  '/readyz': {
    GET: async (req, env, cfg) => {
      await getGuard(env, cfg).catch(() => {});
      return health(env, cfg, true);
    },
  },
};

export default {
  async fetch(request, env) {
    try {
      await initWasm(wasm); // once per isolate; policy checks below run in the core
      const cfg = config(env);
      const { pathname } = new URL(request.url);
      const key = pathname.length > 1 ? pathname.replace(/\/$/, '') : pathname;
      const route = Object.hasOwn(ROUTES, key) ? ROUTES[key] : null;
      if (!route) throw new HttpError(404, 'not_found', `unknown path ${pathname}; this guard serves POST /v1/moderations and POST /v1/chat/completions`);
      const handler = Object.hasOwn(route, request.method) ? route[request.method] : null;
      if (!handler) {
        const allow = Object.keys(route).join(', ');
        throw new HttpError(405, 'method_not_allowed', `${request.method} is not allowed on ${pathname}; use ${allow}`, { headers: { allow } });
      }
      return await handler(request, env, cfg);
    } catch (e) {
      if (e instanceof HttpError) return errorResponse(e);
      console.error(`slm-guard: internal error: ${e?.stack ?? e}`);
      return errorResponse(new HttpError(500, 'internal_error', `internal error: ${e?.message ?? e}`));
    }
  },
};
