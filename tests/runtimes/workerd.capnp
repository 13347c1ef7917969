# workerd config for the package smoke test (paths are relative to this file).
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .guardWorker) ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "main") ],
);

const guardWorker :Workerd.Worker = (
  modules = [
    (name = "worker.js", esModule = embed "worker.js"),
    (name = "index.js", esModule = embed "../../pkg/index.js"),
    (name = "slm_guard.js", esModule = embed "../../pkg/slm_guard.js"),
    (name = "slm_guard_bg.wasm", wasm = embed "../../pkg/slm_guard_bg.wasm"),
    (name = "manifest.json.bin", data = embed "../../models/classifier/manifest.json"),
    (name = "model.gguf", data = embed "../../models/classifier/model.gguf"),
    (name = "tokenizer.json.bin", data = embed "../../models/classifier/tokenizer.json"),
  ],
  compatibilityDate = "2026-11-01",
);
