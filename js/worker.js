// Web Worker side of createGuardWorker(): one Guard per worker, driven by {id, method, args} messages.
import { Guard } from './index.js';

let guard = null;

self.onmessage = async ({ data: { id, method, args } }) => {
  try {
    let result;
    if (method === 'load') {
      const [options] = args;
      guard = await Guard.load({ ...options, onProgress: (event) => self.postMessage({ type: 'progress', event }) });
      result = guard.info();
    } else if (!guard) {
      throw Object.assign(new Error('the model is not loaded'), { code: 'DISPOSED' });
    } else if (method === 'dispose') {
      guard.dispose();
      guard = null;
    } else {
      result = await guard[method](...args);
    }
    self.postMessage({ id, result });
  } catch (e) {
    self.postMessage({ id, error: { code: e.code ?? 'INTERNAL', message: e.message ?? String(e) } });
  }
};
