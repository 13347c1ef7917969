# workerd config for the slm-guard edge worker. Run from the repository root:
#
#   UPSTREAM_URL=https://api.openai.com npx workerd serve www/edge/config.capnp
#   (options: --socket-addr http=127.0.0.1:PORT, --directory-path model-files=/path/to/model/dir)
#
# Module names mirror the repository layout so the worker's relative imports resolve as they do for wrangler.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .guardWorker),
    # The model directory (manifest.json, tokenizer.json, model.gguf or model.gguf.parts.json + parts), bound as
    # MODEL. Relative to the current directory (workerd's rule for disk services): run from the repository root.
    (name = "model-files", disk = (path = "models/classifier", writable = false)),
    # Outbound network for fetch() (the upstream API, MODEL_URL). workerd's default allows only public addresses;
    # private and local are allowed here so a local upstream (a mock, a self-hosted model server) works.
    (name = "internet", network = (allow = ["public", "private", "local"], tlsOptions = (trustBrowserCas = true))),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:8787", http = (), service = "main") ],
);

const guardWorker :Workerd.Worker = (
  modules = [
    (name = "www/edge/worker.js", esModule = embed "worker.js"),
    (name = "www/edge/lib.js", esModule = embed "lib.js"),
    (name = "pkg/index.js", esModule = embed "../../pkg/index.js"),
    (name = "pkg/slm_guard.js", esModule = embed "../../pkg/slm_guard.js"),
    (name = "pkg/slm_guard_bg.wasm", wasm = embed "../../pkg/slm_guard_bg.wasm"),
  ],
  compatibilityDate = "2026-11-01",
  bindings = [
    (name = "MODEL", service = "model-files"),
    (name = "UPSTREAM_URL", fromEnvironment = "UPSTREAM_URL"),
    (name = "MODEL_URL", fromEnvironment = "MODEL_URL"),
    (name = "FAIL_MODE", fromEnvironment = "FAIL_MODE"),
    (name = "POLICY", fromEnvironment = "POLICY"),
    (name = "ALLOW_POLICY_HEADER", fromEnvironment = "ALLOW_POLICY_HEADER"),
    (name = "CHECK_ROLES", fromEnvironment = "CHECK_ROLES"),
    (name = "MAX_BODY_BYTES", fromEnvironment = "MAX_BODY_BYTES"),
    (name = "MAX_TEXT_BYTES", fromEnvironment = "MAX_TEXT_BYTES"),
    (name = "MAX_INPUTS", fromEnvironment = "MAX_INPUTS"),
    (name = "UPSTREAM_TIMEOUT_MS", fromEnvironment = "UPSTREAM_TIMEOUT_MS"),
    (name = "LOAD_RETRY_MS", fromEnvironment = "LOAD_RETRY_MS"),
  ],
  globalOutbound = "internet",
);
