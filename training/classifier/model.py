"""PyTorch twin of the runtime's classifier (`src/model/classifier.rs`): BERT encoder (post-LayerNorm, exact GELU,
positions from 0, token type 0), mean pooling over the attention mask, one linear head.

Head outputs (logits, sigmoid each): index 0 = `unsafe`, then one per category in `CATEGORIES` order; a model with
the reply branch (`ReplyBranch`) appends one more, `reply_unsafe`.
Parameter names follow Hugging Face BERT, which is also what the GGUF export and the Rust loader use.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

CATEGORIES = ["hate", "harassment", "violence", "sexual", "sexual_minors", "self_harm", "crime", "privacy",
              "prompt_attack"]
LABELS = ["unsafe"] + CATEGORIES


class Embeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H = cfg["hidden"]
        self.word_embeddings = nn.Embedding(cfg["vocab"], H)
        self.position_embeddings = nn.Embedding(cfg["max_pos"], H)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab"], H)
        self.LayerNorm = nn.LayerNorm(H, eps=cfg["eps"])

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H = cfg["hidden"]
        self.heads = cfg["heads"]
        self.query, self.key, self.value = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)

    def forward(self, x, bias):
        B, T, H = x.shape
        split = lambda t: t.view(B, T, self.heads, H // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return ctx.transpose(1, 2).reshape(B, T, H)


class AttentionOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden"], cfg["hidden"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden"], eps=cfg["eps"])

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AttentionOutput(cfg)

    def forward(self, x, bias):
        return self.output(self.self(x, bias), x)


class Intermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["hidden"], cfg["ffn"])

    def forward(self, x):
        return F.gelu(self.dense(x))


class Output(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg["ffn"], cfg["hidden"])
        self.LayerNorm = nn.LayerNorm(cfg["hidden"], eps=cfg["eps"])

    def forward(self, h, x):
        return self.LayerNorm(self.dense(h) + x)


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)

    def forward(self, x, bias):
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([Layer(cfg) for _ in range(cfg["layers"])])


class ReplyBranch(nn.Module):
    """The reply check (`ReplyBranch` in src/model/classifier.rs): its own copies of the top `n` encoder layers, run on
    the hidden states after the layers it shares with the message head, mean-pooled, one logit: P(a guardian reply is
    unsafe to show). Trained by training/classifier/reply_head.py."""

    def __init__(self, cfg, n):
        super().__init__()
        self.start = cfg["layers"] - n
        self.layer = nn.ModuleList([Layer(cfg) for _ in range(n)])
        self.head = nn.Linear(cfg["hidden"], 1)

    def forward(self, x, mask):
        """`x`: hidden states after encoder layer `start - 1`."""
        bias = GuardClassifier.attention_bias(mask)
        for layer in self.layer:
            x = layer(x, bias)
        return self.head(GuardClassifier.pool(x, mask))


class GuardClassifier(nn.Module):
    def __init__(self, cfg, n_labels=len(LABELS), reply_layers=0):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.head = nn.Linear(cfg["hidden"], n_labels)
        self.reply = ReplyBranch(cfg, reply_layers) if reply_layers else None

    @staticmethod
    def attention_bias(mask):
        # additive mask: 0 where attended, a large negative number on padding keys
        return ((1.0 - mask[:, None, None, :].float()) * -1e9)

    def encode(self, ids, mask, start=0, stop=None, x=None):
        """Run layers [start, stop); returns hidden states (lets training cache frozen lower layers)."""
        bias = self.attention_bias(mask)
        if x is None:
            x = self.embeddings(ids)
        for layer in self.encoder.layer[start:stop]:
            x = layer(x, bias)
        return x

    @staticmethod
    def pool(x, mask):
        m = mask[..., None].to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, ids, mask):
        """Logits of the message labels, then `reply_unsafe` where the model has the reply branch."""
        if self.reply is None:
            return self.head(self.pool(self.encode(ids, mask), mask))
        shared = self.encode(ids, mask, 0, self.reply.start)
        message = self.head(self.pool(self.encode(ids, mask, self.reply.start, x=shared), mask))
        return torch.cat([message, self.reply(shared, mask)], -1)

    def load_backbone(self, sd):
        missing, unexpected = self.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
        assert not unexpected, unexpected
        assert all(k.startswith("head.") for k in missing), missing
