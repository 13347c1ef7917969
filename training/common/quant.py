"""Row-scaled Q8_0: the weight format both exports write and the runtime's int8 kernels read (numpy only)."""
import numpy as np


def quantize_q8_0_row(w):
    """Q8_0 blocks whose scale is shared by the whole row (max |w| / 127, rounded to fp16). A valid GGUF Q8_0
    tensor for any reader; the runtime's int8 kernels see one scale per output row and skip per-block rescaling."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, k = w.shape
    d = (np.abs(w).max(axis=1) / 127.0).astype(np.float16)
    d32 = d.astype(np.float32)
    q = np.clip(np.rint(w / np.where(d32 == 0, 1, d32)[:, None]), -127, 127).astype(np.int8)
    blocks = np.empty((rows, k // 32, 34), dtype=np.uint8)
    blocks[:, :, :2] = np.repeat(d.view(np.uint8).reshape(rows, 1, 2), k // 32, axis=1)
    blocks[:, :, 2:] = q.reshape(rows, k // 32, 32).view(np.uint8)
    return blocks.reshape(rows, -1), q.astype(np.float32) * d32[:, None]
