"""Rows -> token batches for training and evaluation (length-bucketed, dynamic padding)."""
import json
import random

import numpy as np
import torch
from tokenizers import Tokenizer

from classifier.model import CATEGORIES


def load_split(path, splits):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["split"] in splits:
                rows.append(r)
    return rows


def tokenizer(path, max_len):
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_len)
    tok.no_padding()
    return tok


def collate(seqs):
    """Token-id sequences -> (ids, attention mask), padded to the longest with the pad id 1."""
    L = max(len(x) for x in seqs)
    ids = torch.ones((len(seqs), L), dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for j, x in enumerate(seqs):
        ids[j, : len(x)] = torch.tensor(x)
        mask[j, : len(x)] = 1
    return ids, mask


def targets(r):
    y = np.zeros(1 + len(CATEGORIES), dtype=np.float32)
    m = np.zeros(len(CATEGORIES), dtype=np.float32)
    y[0] = r["unsafe"]
    for c in r["categories"]:
        y[1 + CATEGORIES.index(c)] = 1.0
    if r["unsafe"] == 0 or r["cat_known"]:
        m[:] = 1.0
    return y, m


class Batches:
    def __init__(self, rows, tok_path, batch, max_len, repeats=None):
        self.rows, self.batch = rows, batch
        self.repeats = repeats or [1] * len(rows)
        tok = tokenizer(tok_path, max_len)
        self.ids = [e.ids for e in tok.encode_batch([r["text"] for r in rows])]
        t = [targets(r) for r in rows]
        self.y = np.stack([a for a, _ in t]) if t else np.zeros((0, 10), np.float32)
        self.ymask = np.stack([b for _, b in t]) if t else np.zeros((0, 9), np.float32)

    def _collate(self, idx):
        return collate([self.ids[i] for i in idx])

    def n_batches(self):
        return (sum(self.repeats) + self.batch - 1) // self.batch

    def _epoch(self, seed, epoch):
        rng = random.Random(f"{seed}-{epoch}")
        order = [i for i, n in enumerate(self.repeats) for _ in range(n)]
        rng.shuffle(order)
        # bucket: sort chunks of 64 batches by length, so padding is small but batches stay random
        chunk = self.batch * 64
        batches = []
        for c in range(0, len(order), chunk):
            part = sorted(order[c:c + chunk], key=lambda i: len(self.ids[i]))
            batches += [part[k:k + self.batch] for k in range(0, len(part), self.batch)]
        rng.shuffle(batches)
        return batches

    def train_batches(self, seed, start_step, total):
        """Deterministic sequence of `total` batches; resumes at `start_step` without replaying the others."""
        n = self.n_batches()
        step = start_step
        while step < total:
            epoch, k = divmod(step, n)
            batches = self._epoch(seed, epoch)
            for idx in batches[k:]:
                if step >= total:
                    return
                ids, mask = self._collate(idx)
                yield step, ids, mask, torch.from_numpy(self.y[idx]), torch.from_numpy(self.ymask[idx])
                step += 1

    def eval_batches(self):
        order = sorted(range(len(self.rows)), key=lambda i: len(self.ids[i]))
        for k in range(0, len(order), self.batch):
            idx = order[k:k + self.batch]
            ids, mask = self._collate(idx)
            yield np.array(idx), ids, mask
