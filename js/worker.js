// Web Worker side of createGuardWorker(): one Guard per worker, driven by {id, method, args} messages.
// `respond` streams {type: 'token', id, piece} messages and stops when an {method: 'abort', args: [id]} arrives
// (the Guard yields to the event loop between tokens, so the abort message is read mid-generation).
import { Guard } from './index.js';

let guard = null;
const running = new Map(); // respond call id -> AbortController

self.onmessage = async ({ data: { id, method, args } }) => {
  if (method === 'abort') {
    running.get(args[0])?.abort();
    return;
  }
  try {
    let result;
    const progress = (event) => self.postMessage({ type: 'progress', event });
    if (method === 'load') {
      const [options] = args;
      guard = await Guard.load({ ...options, onProgress: progress });
      result = guard.info();
    } else if (!guard) {
      throw Object.assign(new Error('the model is not loaded'), { code: 'DISPOSED' });
    } else if (method === 'dispose') {
      guard.dispose();
      guard = null;
    } else if (method === 'attachGuardian') {
      result = await guard.attachGuardian({ ...args[0], onProgress: progress });
    } else if (method === 'respond') {
      const [text, { forceSafety, maxTokens, noRepeatNgram, check } = {}] = args;
      const ctrl = new AbortController();
      running.set(id, ctrl);
      try {
        result = await guard.respond(text, {
          forceSafety,
          maxTokens,
          noRepeatNgram,
          check,
          signal: ctrl.signal,
          onToken: (piece) => self.postMessage({ type: 'token', id, piece }),
        });
      } finally {
        running.delete(id);
      }
    } else {
      result = await guard[method](...args);
    }
    self.postMessage({ id, result });
  } catch (e) {
    self.postMessage({ id, error: { code: e.code ?? 'INTERNAL', message: e.message ?? String(e) } });
  }
};
