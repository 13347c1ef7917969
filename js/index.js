// slm-guard JavaScript API: a thin layer over the Rust core (compiled to wasm). It fetches, caches and hands the
// model files to Rust; verification, inference and policy are all Rust.
import init, { initSync, WasmGuard, WasmGuardian, normalizeText, checkPolicy as wasmCheckPolicy, unavailableVerdict as wasmUnavailable } from './slm_guard.js';

const CACHE_NAME = 'slm-guard-models-v1';
const FILES = ['model.gguf', 'tokenizer.json'];
const memoryCache = new Map(); // sha256 -> Uint8Array, when the Cache API is missing or full

export class GuardError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'GuardError';
    this.code = code;
  }
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node && typeof globalThis.Deno === 'undefined';
const isDeno = typeof globalThis.Deno !== 'undefined';

let wasmReady = null;

/** Initialise the wasm module once. `wasm` may be a WebAssembly.Module (edge workers), bytes, or a URL. */
export function initWasm(wasm) {
  if (!wasmReady) {
    wasmReady = (async () => {
      if (wasm instanceof WebAssembly.Module) return initSync({ module: wasm });
      if (wasm instanceof ArrayBuffer || ArrayBuffer.isView(wasm)) return initSync({ module: wasm });
      if (wasm) return init({ module_or_path: wasm });
      const url = new URL('./slm_guard_bg.wasm', import.meta.url);
      if (isNode) {
        const { readFile } = await import('node:fs/promises');
        return initSync({ module: await readFile(url) });
      }
      if (isDeno && url.protocol === 'file:') return initSync({ module: await Deno.readFile(url) });
      return init({ module_or_path: url });
    })().catch((e) => {
      wasmReady = null;
      throw e;
    });
  }
  return wasmReady;
}

function rethrow(e) {
  if (e instanceof GuardError) throw e;
  if (e && typeof e.code === 'string') throw new GuardError(e.code, e.message);
  throw new GuardError('INTERNAL', String(e?.message ?? e));
}

function asBytes(x, what) {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  if (typeof x === 'string') return new TextEncoder().encode(x);
  throw new GuardError('INVALID_INPUT', `${what} must be bytes (Uint8Array or ArrayBuffer)`);
}

function isLocalPath(model) {
  if (!(isNode || isDeno)) return false;
  if (model instanceof URL) return model.protocol === 'file:';
  return typeof model === 'string' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(model);
}

async function readLocal(base, name) {
  const url = base instanceof URL ? new URL(name, base) : null;
  try {
    if (isDeno) return await Deno.readFile(url ?? `${base.replace(/\/?$/, '/')}${name}`);
    const { readFile } = await import('node:fs/promises');
    const { join } = await import('node:path');
    return new Uint8Array(await readFile(url ?? join(base, name)));
  } catch (e) {
    throw new GuardError('IO', `cannot read model file ${name}: ${e.message}`);
  }
}

async function sha256(bytes) {
  const digest = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function openCache(enabled) {
  if (!enabled || typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // storage disabled (private mode, opaque origin): memory only
  }
}

async function fetchWithProgress(url, file, expectedBytes, onProgress) {
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new GuardError('NETWORK', `cannot fetch ${url}: ${e.message}`);
  }
  if (!res.ok) throw new GuardError('NETWORK', `cannot fetch ${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get('content-length')) || expectedBytes || 0;
  if (!res.body || !onProgress) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.byteLength;
    onProgress({ file, loaded, total, fromCache: false });
  }
  const out = new Uint8Array(loaded);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.byteLength;
  }
  return out;
}

/** Cache-first load of one model file, keyed by its sha256 so a new model version never reads a stale file. */
async function loadFile(base, name, entry, cache, onProgress) {
  const url = new URL(name, base);
  const key = new Request(`${url.href}?sha256=${entry.sha256}`);
  const mem = memoryCache.get(entry.sha256);
  if (mem) {
    onProgress?.({ file: name, loaded: mem.byteLength, total: mem.byteLength, fromCache: true });
    return { bytes: mem, fromCache: true, key };
  }
  if (cache) {
    const hit = await cache.match(key).catch(() => undefined);
    if (hit) {
      const bytes = new Uint8Array(await hit.arrayBuffer());
      if ((await sha256(bytes)) === entry.sha256) {
        onProgress?.({ file: name, loaded: bytes.byteLength, total: bytes.byteLength, fromCache: true });
        return { bytes, fromCache: true, key };
      }
      await cache.delete(key).catch(() => {}); // corrupted entry: refetch
    }
  }
  const bytes = await fetchWithProgress(url.href, name, entry.bytes, onProgress);
  return { bytes, fromCache: false, key };
}

async function loadManifest(base, cache, revalidate = true) {
  const url = new URL('manifest.json', base).href;
  if (!revalidate && cache) {
    // offline-first: a cached manifest (and, by its sha256 keys, cached files) means no request at all
    const hit = await cache.match(url).catch(() => undefined);
    if (hit) return new Uint8Array(await hit.arrayBuffer());
  }
  try {
    const res = await fetch(url, { cache: 'no-cache' });
    if (!res.ok) throw new GuardError('NETWORK', `cannot fetch ${url}: HTTP ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (cache) await cache.put(url, new Response(bytes)).catch(() => {});
    return bytes;
  } catch (e) {
    const hit = cache && (await cache.match(url).catch(() => undefined));
    if (hit) return new Uint8Array(await hit.arrayBuffer()); // offline: the cached manifest
    throw e instanceof GuardError ? e : new GuardError('NETWORK', `cannot fetch ${url}: ${e.message}`);
  }
}

function parseManifest(bytes) {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new GuardError('MODEL_MANIFEST', `manifest is not JSON: ${e.message}`);
  }
}

function resolveBase(model) {
  const s = String(model);
  const href = s.endsWith('manifest.json') ? s.slice(0, -'manifest.json'.length) : s.replace(/\/?$/, '/');
  const origin = typeof location !== 'undefined' ? location.href : undefined;
  try {
    return new URL(href, origin);
  } catch {
    throw new GuardError('INVALID_INPUT', `model must be a URL, a path or {manifest, weights, tokenizer} bytes; got ${s}`);
  }
}

/**
 * A model directory's files (manifest, weights, tokenizer) from a URL (cache-first, with progress), a local path
 * (Node, Deno) or bytes. `commit()` caches what was fetched: call it only after Rust verified the files.
 */
async function loadModelFiles(model, { cache, revalidate, onProgress }) {
  if (typeof model === 'object' && !(model instanceof URL) && 'weights' in model) {
    const files = { manifest: asBytes(model.manifest, 'manifest'), weights: asBytes(model.weights, 'weights'), tokenizer: asBytes(model.tokenizer, 'tokenizer') };
    return { files, fromCache: {}, commit: async () => {} };
  }
  if (isLocalPath(model)) {
    const base = model instanceof URL ? new URL(model.href.replace(/\/?$/, '/')) : String(model);
    const files = { manifest: await readLocal(base, 'manifest.json'), weights: await readLocal(base, 'model.gguf'), tokenizer: await readLocal(base, 'tokenizer.json') };
    return { files, fromCache: {}, commit: async () => {} };
  }
  const base = resolveBase(model);
  const cacheHandle = await openCache(cache);
  const manifestBytes = await loadManifest(base, cacheHandle, revalidate);
  const manifest = parseManifest(manifestBytes);
  const got = {};
  const fromCache = {};
  for (const name of FILES) {
    const entry = manifest.files?.[name];
    if (!entry?.sha256) throw new GuardError('MODEL_MANIFEST', `manifest has no sha256 for ${name}`);
    got[name] = await loadFile(base, name, entry, cacheHandle, onProgress);
    fromCache[name] = got[name].fromCache;
  }
  const files = { manifest: manifestBytes, weights: got['model.gguf'].bytes, tokenizer: got['tokenizer.json'].bytes };
  const commit = async () => {
    for (const name of FILES) {
      const g = got[name];
      if (g.fromCache) continue;
      let stored = false;
      if (cacheHandle) stored = await cacheHandle.put(g.key, new Response(g.bytes)).then(() => true, () => false);
      if (!stored) memoryCache.set(manifest.files[name].sha256, g.bytes);
    }
  };
  return { files, fromCache, commit };
}

function checkCascade(cascade) {
  if (cascade === true || cascade === false) return;
  const ok = cascade && typeof cascade === 'object' && Number.isFinite(cascade.low) && Number.isFinite(cascade.high)
    && cascade.low >= 0 && cascade.low <= cascade.high && cascade.high <= 1;
  if (!ok) throw new GuardError('INVALID_POLICY', 'cascade must be true, false or {low, high} with 0 <= low <= high <= 1');
}

/** A macrotask boundary (timers, abort events and input run), cheaper than setTimeout's clamped delay. */
function yieldToEventLoop() {
  if (typeof globalThis.scheduler?.yield === 'function') return globalThis.scheduler.yield();
  if (typeof setImmediate === 'function') return new Promise((r) => setImmediate(r));
  if (typeof MessageChannel === 'function') {
    return new Promise((r) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        r();
      };
      ch.port2.postMessage(null);
    });
  }
  return new Promise((r) => setTimeout(r, 0));
}

/** Whether a load asks the core for WebGPU: 'webgpu' always (it errors without it), 'auto' only where
 * navigator.gpu exists (browsers; not Node, Deno's CPU or workerd), 'cpu' never. */
function triesWebGpu(backend) {
  return backend === 'webgpu' || (backend === 'auto' && typeof navigator !== 'undefined' && !!navigator.gpu);
}

export class Guard {
  #inner;
  #loadInfo;
  #guardian = null;
  #guardianLoad = null;
  #cascade = true;

  constructor(inner, loadInfo) {
    this.#inner = inner;
    this.#loadInfo = loadInfo;
  }

  /**
   * Load a model. `model`: base URL of a model directory (manifest.json, model.gguf, tokenizer.json), a local path
   * (Node, Deno), or `{ manifest, weights, tokenizer }` bytes.
   */
  static async load({ model, backend = 'auto', onProgress, cache = true, revalidate = true, wasm, guardian, cascade = true } = {}) {
    if (!['auto', 'cpu', 'webgpu'].includes(backend)) {
      throw new GuardError('INVALID_INPUT', `backend must be 'auto', 'cpu' or 'webgpu', got ${backend}`);
    }
    if (model === undefined || model === null) throw new GuardError('INVALID_INPUT', 'model is required');
    await initWasm(wasm);
    const t0 = Date.now();
    const got = await loadModelFiles(model, { cache, revalidate, onProgress });
    let inner;
    try {
      const f = got.files;
      inner = triesWebGpu(backend)
        ? await WasmGuard.create(f.manifest, f.weights, f.tokenizer, backend)
        : new WasmGuard(f.manifest, f.weights, f.tokenizer);
    } catch (e) {
      rethrow(e);
    }
    await got.commit(); // only verified files are cached
    const g = new Guard(inner, { fromCache: got.fromCache, loadMs: Date.now() - t0, requestedBackend: backend });
    if (guardian !== undefined && guardian !== null) {
      try {
        await g.attachGuardian({ model: guardian, backend, onProgress, cache, revalidate, cascade });
      } catch (e) {
        g.dispose();
        throw e;
      }
    }
    return g;
  }

  /**
   * Load the generative guardian next to the classifier (it can come later: it is ~140 MB). Afterwards `respond`
   * works and `classify` runs the cascade unless `cascade` is false (`{low, high}`: the uncertain band; default
   * the guardian manifest's). `backend` (default: the one asked for at `Guard.load`) as for the classifier: 'auto'
   * runs the guardian on WebGPU only on a hardware adapter measured faster than the CPU at load. Replaces a guardian
   * attached before.
   */
  async attachGuardian({ model, backend, onProgress, cache = true, revalidate = true, cascade = true } = {}) {
    this.#live();
    if (model === undefined || model === null) throw new GuardError('INVALID_INPUT', 'guardian model is required');
    backend ??= this.#loadInfo.requestedBackend ?? 'auto';
    if (!['auto', 'cpu', 'webgpu'].includes(backend)) {
      throw new GuardError('INVALID_INPUT', `backend must be 'auto', 'cpu' or 'webgpu', got ${backend}`);
    }
    checkCascade(cascade);
    const t0 = Date.now();
    const got = await loadModelFiles(model, { cache, revalidate, onProgress });
    let guardian;
    try {
      const f = got.files;
      guardian = triesWebGpu(backend)
        ? await WasmGuardian.create(f.manifest, f.weights, f.tokenizer, backend)
        : new WasmGuardian(f.manifest, f.weights, f.tokenizer);
    } catch (e) {
      rethrow(e);
    }
    await got.commit();
    this.detachGuardian();
    this.#guardian = guardian;
    this.#cascade = cascade;
    this.#guardianLoad = { fromCache: got.fromCache, loadMs: Date.now() - t0 };
    return this.#guardianInfo();
  }

  /** Drop the guardian (frees its memory); `classify` is the classifier's alone again. */
  detachGuardian() {
    if (this.#guardian) {
      this.#guardian.dispose();
      this.#guardian.free();
      this.#guardian = null;
    }
  }

  /**
   * The guardian's safe response to `text`, streamed: `onToken(piece)` gets each piece of text as it is generated.
   * Greedy; stops at the end of the model's turn, where the reply would repeat a 4-gram (`noRepeatNgram`, 0: off) or
   * after `maxTokens` (default 256). `forceSafety` asks for the
   * careful answer even when the message looks benign. `signal` (AbortSignal) cancels: the promise then resolves
   * with what was generated and `stopped: 'cancelled'`. With `check` (default true) the reply is released sentence by
   * sentence, each after the classifier has read the reply so far: a flagged sentence is never shown (nor one with a
   * phone number that is not a verified help line), the reply ends there (`stopped: 'unsafe'`), and if nothing
   * passed, `text` is the built-in safe reply (`fallback: true`). A reply to a message the classifier rates a
   * self-harm risk ends with a verified crisis line in its language when the model gave none (`crisis_line_added`).
   * `check: false` streams every token as generated. Errors: NO_GUARDIAN, INPUT_TOO_LONG, INVALID_INPUT.
   */
  async respond(text, { forceSafety = false, maxTokens, noRepeatNgram, check = true, signal, onToken } = {}) {
    if (typeof text !== 'string') throw new GuardError('INVALID_INPUT', 'text must be a string');
    if (maxTokens !== undefined && !(Number.isInteger(maxTokens) && maxTokens > 0 && maxTokens <= 4096)) {
      throw new GuardError('INVALID_INPUT', `maxTokens must be an integer in 1..4096, got ${maxTokens}`);
    }
    if (noRepeatNgram !== undefined && !(Number.isInteger(noRepeatNgram) && noRepeatNgram >= 0 && noRepeatNgram <= 16)) {
      throw new GuardError('INVALID_INPUT', `noRepeatNgram must be an integer in 0..16, got ${noRepeatNgram}`);
    }
    if (onToken !== undefined && typeof onToken !== 'function') throw new GuardError('INVALID_INPUT', 'onToken must be a function');
    const guardian = this.#requireGuardian();
    let gen;
    try {
      gen = guardian.start(text, !!forceSafety, maxTokens ?? 0, noRepeatNgram ?? -1);
      if (check) gen.gate(this.#live());
    } catch (e) {
      rethrow(e);
    }
    try {
      for (;;) {
        if (signal?.aborted) {
          gen.cancel();
          break;
        }
        const piece = await gen.nextAsync();
        if (piece === undefined) break;
        if (piece !== '') onToken?.(piece); // '': a token of a sentence the gate has not released yet
        await yieldToEventLoop(); // lets an abort, a click or a repaint in between two tokens
      }
      return gen.finish();
    } catch (e) {
      rethrow(e);
    } finally {
      gen.free();
    }
  }

  /** Verdict for one message. `policy`: thresholds, actions, sensitivity, fail mode (all optional). With a guardian
   * attached (and `cascade` not false) the classifier decides clear cases and the guardian the uncertain band;
   * the verdict's `decided_by` says which, `cascade` carries both scores. */
  async classify(text, policy) {
    if (typeof text !== 'string') throw new GuardError('INVALID_INPUT', 'text must be a string');
    try {
      if (this.#guardian && this.#cascade !== false) {
        const band = typeof this.#cascade === 'object' ? this.#cascade : undefined;
        return await this.#live().classifyCascadeAsync(text, policy, this.#guardian, band);
      }
      return await this.#live().classifyAsync(text, policy);
    } catch (e) {
      rethrow(e);
    }
  }

  /** The check the reply gate runs on each sentence of a guardian reply (`respond`, `check: true`): is `reply` (the
   * reply so far) unsafe to show? `{ flagged, score, threshold }` from the classifier's `reply_unsafe` branch, which
   * was trained on the guardian's replies (not on other models' output); `score` and `threshold` are null for a
   * classifier without it (its message verdict decides). Useful when you generate with `check: false`. */
  async checkReply(reply, policy) {
    if (typeof reply !== 'string') throw new GuardError('INVALID_INPUT', 'reply must be a string');
    try {
      return this.#live().checkReply(reply, policy);
    } catch (e) {
      rethrow(e);
    }
  }

  /** The guardian's own verdict (the classify format on the generative model), without the classifier. */
  async classifyWithGuardian(text, policy) {
    if (typeof text !== 'string') throw new GuardError('INVALID_INPUT', 'text must be a string');
    const guardian = this.#requireGuardian();
    try {
      return await guardian.classifyAsync(text, policy);
    } catch (e) {
      rethrow(e);
    }
  }

  /** One verdict per message, each the verdict `classify` would give it (the cascade included); a message that
   * cannot be scored gets the fail-mode verdict with `error` set. */
  async classifyBatch(texts, policy) {
    if (!Array.isArray(texts) || texts.some((t) => typeof t !== 'string')) {
      throw new GuardError('INVALID_INPUT', 'texts must be an array of strings');
    }
    try {
      if (this.#guardian && this.#cascade !== false) {
        const band = typeof this.#cascade === 'object' ? this.#cascade : undefined;
        return await this.#live().classifyBatchCascadeAsync(texts, policy, this.#guardian, band);
      }
      return await this.#live().classifyBatchAsync(texts, policy);
    } catch (e) {
      rethrow(e);
    }
  }

  /** The verdict the policy's fail mode gives when the model could not run (for callers that must answer). */
  failVerdict(error, text = '', policy) {
    return this.#live().failVerdict(String(error?.code ?? 'INTERNAL'), String(error?.message ?? error), String(text), policy);
  }

  /** Model name, version, backend (the one that runs the next call: it turns to 'cpu' if the GPU was lost),
   * adapter, calibration, labels, default thresholds, sizes, load time and cache use. */
  info() {
    return { ...this.#live().info(), ...this.#loadInfo, guardian: this.#guardian ? this.#guardianInfo() : null };
  }

  dispose() {
    this.detachGuardian();
    if (this.#inner) {
      this.#inner.dispose();
      this.#inner.free();
      this.#inner = null;
    }
  }

  #live() {
    if (!this.#inner) throw new GuardError('DISPOSED', 'this Guard was disposed');
    return this.#inner;
  }

  #requireGuardian() {
    this.#live();
    if (!this.#guardian) {
      throw new GuardError('NO_GUARDIAN', 'no guardian model is loaded: pass `guardian` to Guard.load or call attachGuardian');
    }
    return this.#guardian;
  }

  #guardianInfo() {
    return { ...this.#guardian.info(), ...this.#guardianLoad, cascade: this.#cascade === false ? null : (typeof this.#cascade === 'object' ? this.#cascade : 'manifest') };
  }
}

/** Throws a GuardError (INVALID_POLICY) when a policy has unknown fields, wrong types or out-of-range values.
 * Needs the wasm module initialised (`await initWasm(...)`); category names are checked against a model at use. */
export function checkPolicy(policy) {
  try {
    wasmCheckPolicy(policy);
  } catch (e) {
    rethrow(e);
  }
}

/** The fail-mode verdict when no model could be loaded (needs the wasm module initialised). */
export function unavailableVerdict(error, text = '', policy, categories = []) {
  return wasmUnavailable(String(error?.code ?? 'INTERNAL'), String(error?.message ?? error), String(text), policy, categories);
}

/** The normalisation the model sees (for debugging and tests). */
export function normalize(text) {
  return normalizeText(text);
}

/**
 * Run the guard in a Web Worker so the page's main thread never blocks. Same methods as `Guard`, all async.
 * Options are those of `Guard.load` (except callbacks other than onProgress, and `wasm`).
 */
export function createGuardWorker(options = {}) {
  const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
  let next = 1;
  const pending = new Map();
  const { onProgress, ...rest } = options;
  worker.onmessage = ({ data }) => {
    if (data.type === 'progress') return onProgress?.(data.event);
    const p = pending.get(data.id);
    if (!p) return;
    if (data.type === 'token') return p.onToken?.(data.piece);
    pending.delete(data.id);
    if (data.error) p.reject(new GuardError(data.error.code, data.error.message));
    else p.resolve(data.result);
  };
  worker.onerror = (e) => {
    for (const p of pending.values()) p.reject(new GuardError('WORKER', e.message || 'worker failed'));
    pending.clear();
  };
  const send = (method, args, extra = {}) => {
    const id = next++;
    const promise = new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject, ...extra });
      worker.postMessage({ id, method, args });
    });
    return { id, promise };
  };
  const call = (method, ...args) => send(method, args).promise;
  const ready = call('load', { ...rest, model: rest.model instanceof URL ? rest.model.href : rest.model,
    guardian: rest.guardian instanceof URL ? rest.guardian.href : rest.guardian });
  return {
    ready,
    classify: (text, policy) => ready.then(() => call('classify', text, policy)),
    classifyBatch: (texts, policy) => ready.then(() => call('classifyBatch', texts, policy)),
    checkReply: (reply, policy) => ready.then(() => call('checkReply', reply, policy)),
    attachGuardian: (opts) => ready.then(() => call('attachGuardian', { ...opts, model: opts.model instanceof URL ? opts.model.href : opts.model, onProgress: undefined })),
    respond: (text, { signal, onToken, ...opts } = {}) =>
      ready.then(() => {
        const { id, promise } = send('respond', [text, opts], { onToken });
        if (signal) {
          if (signal.aborted) worker.postMessage({ method: 'abort', args: [id] });
          else signal.addEventListener('abort', () => worker.postMessage({ method: 'abort', args: [id] }), { once: true });
        }
        return promise;
      }),
    info: () => ready.then(() => call('info')),
    dispose: () => ready.then(() => call('dispose')).finally(() => worker.terminate()),
    terminate: () => worker.terminate(),
  };
}
