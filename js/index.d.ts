// TypeScript declarations for the slm-guard npm package.

export type Category =
  | 'hate' | 'harassment' | 'violence' | 'sexual' | 'sexual_minors'
  | 'self_harm' | 'crime' | 'privacy' | 'prompt_attack';

export type Action = 'block' | 'flag' | 'allow';

/** Stable error codes (`GuardError.code`). */
export type ErrorCode =
  | 'MODEL_INTEGRITY' | 'MODEL_MANIFEST' | 'MODEL_VERSION' | 'MODEL_WEIGHTS' | 'MODEL_TOKENIZER'
  | 'INPUT_TOO_LONG' | 'INVALID_INPUT' | 'INVALID_POLICY' | 'BACKEND_UNAVAILABLE' | 'INFERENCE_FAILED'
  | 'DISPOSED' | 'IO' | 'NETWORK' | 'WORKER' | 'INTERNAL' | 'NO_GUARDIAN';

export class GuardError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string);
}

export interface CategoryRule {
  /** Probability at or above which the category is flagged (before sensitivity). Default: the model's. */
  threshold?: number;
  action?: Action;
}

export interface Policy {
  /** 0..1, default 0.5 (thresholds as given); higher flags more. */
  sensitivity?: number;
  /** Threshold on the overall unsafe probability. Default: the model's. */
  unsafe_threshold?: number;
  /** Action when a message is unsafe but no category reaches its threshold. Default 'block'. */
  default_action?: Action;
  categories?: Partial<Record<Category, CategoryRule>>;
  /** What a failure to run the model means: 'closed' (block, default) or 'open' (allow). */
  fail_mode?: 'open' | 'closed';
  /** Longer inputs (UTF-8 bytes) are refused with INPUT_TOO_LONG. Default 262144. */
  max_input_bytes?: number;
  /** Operator override: answer every message with a safe reply (action 'block'), whatever the model says. */
  force_safety?: boolean;
}

/** Shaped like the OpenAI moderation result. */
export interface Verdict {
  flagged: boolean;
  /** Probability that the message is unsafe. */
  score: number;
  category: Category | null;
  categories: Record<Category, boolean>;
  category_scores: Record<Category, number>;
  action: Action;
  /** `name@version` of the model that decided. */
  model: string;
  backend: 'cpu' | 'webgpu';
  timing_ms: number;
  tokens: number;
  windows: number;
  /** Language of the message, used for the reply. */
  lang: 'ko' | 'en';
  /** When action is 'block': a safe reply in the message's language to show instead. */
  reply?: string;
  /** Present when the model could not run and the fail mode decided. */
  error?: { code: ErrorCode; message: string };
  /** Which model's scores made this verdict. */
  decided_by: 'classifier' | 'guardian';
  /** Present when a guardian is attached and the cascade ran. */
  cascade?: CascadeInfo;
}

/** Classifier scores strictly between `low` and `high` go to the guardian. */
export interface Band {
  low: number;
  high: number;
}

export interface CascadeInfo {
  classifier_score: number;
  classifier_model: string;
  /** The guardian's P(unsafe), when it ran. */
  guardian_score: number | null;
  band: Band;
  /** The guardian was asked but could not answer (e.g. INPUT_TOO_LONG); the classifier's verdict stands. */
  guardian_error?: { code: ErrorCode; message: string };
  /** The weights that combined both scores into the verdict's `score` (the guardian manifest's `cascade_fusion`,
   * for the message's language): score = sigmoid(bias + classifier * logit(classifier_score) + guardian *
   * logit(guardian_score)). Absent when the guardian's score alone decided. */
  fusion?: FusionWeights;
}

export interface FusionWeights {
  bias: number;
  classifier: number;
  guardian: number;
}

export interface RespondOptions {
  /** Operator override: answer carefully even when the message looks benign (<|force-safety|>). */
  forceSafety?: boolean;
  /** Most tokens to generate, 1..4096 (default 256). */
  maxTokens?: number;
  /** End the reply where it would repeat an n-gram of this many tokens (default 4; 0: never, plain greedy as the reference outputs). */
  noRepeatNgram?: number;
  /** Release the reply sentence by sentence, each after the classifier's reply check has read the reply so far (default true):
   * a flagged sentence is withheld and ends the reply (`stopped: 'unsafe'`). false: every token as generated. */
  check?: boolean;
  /** Abort to stop generating: the promise resolves with the text so far and `stopped: 'cancelled'`. */
  signal?: AbortSignal;
  /** Each new piece of text (whole UTF-8 characters), as it is generated. */
  onToken?: (piece: string) => void;
}

export interface GuardianResponse {
  /** The reply; after 'repetition' its unfinished last sentence (already streamed) is dropped. */
  text: string;
  /** 'repetition': the next token would have repeated a 4-gram of the reply (see noRepeatNgram);
   * 'unsafe': the classifier's reply check flagged the next sentence, which was withheld (see check). */
  stopped: 'end_of_turn' | 'max_tokens' | 'repetition' | 'unsafe' | 'cancelled';
  /** Every released sentence was checked by the classifier first. */
  checked: boolean;
  /** Nothing passed the check: `text` is the built-in safe reply for the message's language. */
  fallback: boolean;
  /** The classifier rated the message a self-harm risk and the model gave no crisis line, so the gate ended `text`
   * (and the stream) with a verified one in the message's language. */
  crisis_line_added: boolean;
  prompt_tokens: number;
  generated_tokens: number;
  max_tokens: number;
  force_safety: boolean;
  /** Language detected in the response. */
  lang: 'ko' | 'en';
  model: string;
  /** The backend that computed the last token ('cpu' after a lost GPU device). */
  backend: 'cpu' | 'webgpu';
  timing_ms: number;
  /** Prompt read + first generated token. */
  first_token_ms: number | null;
  /** Decode speed after the first token (with check, the classifier's sentence checks are included). */
  tokens_per_s: number;
}

export interface GuardianInfo {
  model: string;
  version: string;
  vocab: number;
  layers: number;
  hidden: number;
  context: number;
  max_tokens: number;
  categories: Category[];
  special_tokens: Record<string, number>;
  /** The band from the guardian's manifest (chosen on dev). */
  cascade_band: Band;
  /** How the cascade combines both models' scores inside the band, per language (null: the guardian's score
   * alone decides). Fitted on the dev split's hard rows (training/guardian/fusion.py). */
  cascade_fusion: { ko: FusionWeights; en: FusionWeights } | null;
  /** What `classify` uses: null (cascade off), 'manifest' (cascade_band) or the band given at load. */
  cascade: Band | 'manifest' | null;
  weights_bytes: number;
  tokenizer_bytes: number;
  load_ms: number;
  /** The backend that runs the next call ('cpu' after a lost GPU device). */
  backend: 'cpu' | 'webgpu';
  adapter: string | null;
  /** Why the CPU runs although WebGPU was tried ('auto'), or why the GPU was dropped later. */
  backend_note: string | null;
  /** 'auto' on a GPU: median ms of a 32-token prompt plus 4 generated tokens per backend, measured at load. */
  calibration_ms: Record<'cpu' | 'webgpu', number> | null;
  loadMs: number;
  fromCache: Record<string, boolean>;
}

export interface ProgressEvent {
  file: string;
  loaded: number;
  total: number;
  fromCache: boolean;
}

export interface ModelBytes {
  manifest: Uint8Array | ArrayBuffer | string;
  weights: Uint8Array | ArrayBuffer;
  tokenizer: Uint8Array | ArrayBuffer | string;
}

export interface LoadOptions {
  /** Base URL of a model directory, a local path (Node, Deno), or the files' bytes. */
  model: string | URL | ModelBytes;
  backend?: 'auto' | 'cpu' | 'webgpu';
  onProgress?: (e: ProgressEvent) => void;
  /** Cache model files in the Cache API (memory when unavailable). Default true. */
  cache?: boolean;
  /** Ask the server whether the manifest changed (default true). `false`: a cached model loads with no request. */
  revalidate?: boolean;
  /** The wasm module (edge workers import it as a module), its bytes or URL. Default: next to this file. */
  wasm?: WebAssembly.Module | BufferSource | string | URL;
  /** A guardian model directory (URL, path or bytes) to load as well: enables `respond` and the cascade. */
  guardian?: string | URL | ModelBytes;
  /** With a guardian: true (default, the manifest's band), false (classifier only) or an explicit band. */
  cascade?: boolean | Band;
}

export interface GuardianLoadOptions {
  model: string | URL | ModelBytes;
  /** Default: the backend asked for at `Guard.load`. */
  backend?: 'auto' | 'cpu' | 'webgpu';
  onProgress?: (e: ProgressEvent) => void;
  cache?: boolean;
  revalidate?: boolean;
  cascade?: boolean | Band;
}

export interface ModelInfo {
  model: string;
  version: string;
  /** The backend that runs the next call ('cpu' after a lost GPU device). */
  backend: 'cpu' | 'webgpu';
  requestedBackend: 'auto' | 'cpu' | 'webgpu';
  /** The GPU adapter considered at load (browsers may hide its name). */
  adapter: string | null;
  /** Why the CPU path runs although WebGPU was asked for or tried, or why the GPU was dropped. */
  backend_note: string | null;
  /** 'auto' on a GPU: median ms of one ~32-token window per backend, measured at load. */
  calibration_ms: { cpu: number; webgpu: number } | null;
  labels: string[];
  categories: Category[];
  thresholds: Record<string, number>;
  weights_bytes: number;
  tokenizer_bytes: number;
  vocab: number;
  max_tokens: number;
  quantization: Record<string, string>;
  load_ms: number;
  loadMs: number;
  fromCache: Record<string, boolean>;
  guardian: GuardianInfo | null;
}

/** The reply gate's check (the classifier's `reply_unsafe` branch, trained on the guardian's replies only). */
export interface ReplyCheck {
  /** Unsafe to show: the gate would withhold it. */
  flagged: boolean;
  /** P(unsafe to show) and its threshold under the policy; null for a classifier without the reply check. */
  score: number | null;
  threshold: number | null;
}

export class Guard {
  static load(options: LoadOptions): Promise<Guard>;
  /** With a guardian attached, the cascade (see `Verdict.decided_by` / `cascade`). */
  classify(text: string, policy?: Policy): Promise<Verdict>;
  /** One verdict per message, as `classify` gives it (the cascade too, when a guardian is attached). */
  classifyBatch(texts: string[], policy?: Policy): Promise<Verdict[]>;
  /** Load the guardian later (it is large); replaces one attached before. */
  attachGuardian(options: GuardianLoadOptions): Promise<GuardianInfo>;
  detachGuardian(): void;
  /** The guardian's safe response, streamed and cancellable. Rejects with NO_GUARDIAN when none is loaded. */
  respond(text: string, options?: RespondOptions): Promise<GuardianResponse>;
  /** The reply gate's check on a guardian reply (so far): would the gate withhold it? */
  checkReply(reply: string, policy?: Policy): Promise<ReplyCheck>;
  /** The guardian's own verdict, without the classifier. */
  classifyWithGuardian(text: string, policy?: Policy): Promise<Verdict>;
  /** The fail-mode verdict for an error; `text` picks the reply language. */
  failVerdict(error: unknown, text?: string, policy?: Policy): Verdict;
  info(): ModelInfo;
  dispose(): void;
}

export interface GuardWorker {
  ready: Promise<ModelInfo>;
  classify(text: string, policy?: Policy): Promise<Verdict>;
  classifyBatch(texts: string[], policy?: Policy): Promise<Verdict[]>;
  checkReply(reply: string, policy?: Policy): Promise<ReplyCheck>;
  attachGuardian(options: Omit<GuardianLoadOptions, 'onProgress'>): Promise<GuardianInfo>;
  respond(text: string, options?: RespondOptions): Promise<GuardianResponse>;
  info(): Promise<ModelInfo>;
  dispose(): Promise<void>;
  terminate(): void;
}

export function createGuardWorker(options: Omit<LoadOptions, 'wasm'>): GuardWorker;
export function initWasm(wasm?: LoadOptions['wasm']): Promise<unknown>;
export function normalize(text: string): string;
/** Throws GuardError INVALID_POLICY for unknown fields, wrong types or out-of-range values (wasm must be initialised). */
export function checkPolicy(policy: Policy): void;
/** The fail-mode verdict when no model could be loaded (wasm must be initialised). */
export function unavailableVerdict(error: unknown, text?: string, policy?: Policy, categories?: string[]): Verdict;
