// Minimal Cloudflare-style worker used by tests/js/runtimes.test.js: the wasm arrives as an imported module (no
// compilation from bytes at run time), the model files as embedded data modules.
import { Guard } from './index.js';
import wasm from './slm_guard_bg.wasm';
import manifest from './manifest.json.bin';
import weights from './model.gguf';
import tokenizer from './tokenizer.json.bin';

let guard;

export default {
  async fetch(request) {
    guard ??= await Guard.load({ model: { manifest, weights, tokenizer }, wasm });
    const { text } = await request.json();
    return Response.json(await guard.classify(text));
  },
};
