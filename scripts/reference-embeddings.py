#!/usr/bin/env python3
"""Computes the reference vectors in embed/tests/fixtures/reference.json.

An independent implementation of the same model: a plain numpy BERT (float64) over the weights in
model.safetensors, tokenized by the model's own tokenizer.json, with attention-masked mean pooling and
L2 normalisation, truncated at 256 tokens like devart-embed. devart-embed's tests compare candle's
output against these vectors; run this only when the texts or the model change.

    python3 -m venv VENV && VENV/bin/pip install numpy safetensors tokenizers
    VENV/bin/python scripts/reference-embeddings.py [MODEL_DIR] > embed/tests/fixtures/reference.json

MODEL_DIR defaults to $DEVART_MODEL_DIR, else /var/lib/devart/models/all-minilm-l6-v2 (scripts/models).
"""

import hashlib
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MAX_TOKENS = 256

LONG = (
    "An event-sourced control plane records every change as an immutable event in an append-only log. "
    "Projections fold those events into read models that can be dropped and rebuilt at any time, while "
    "reactors listen to the same order of events and answer with new commands, each derived from the event "
    "that caused it so that running a reactor twice appends nothing. Agents claim tasks from a queue under a "
    "lease that they must renew with heartbeats; a lease that lapses returns the task to the queue, and a "
    "supervisor may pause a whole team with a kill switch when budgets run out or when an agent misbehaves. "
    "Every command is checked against the current state before any event is written, and conflicting writers "
    "are told so by a unique key on the stream and its version rather than by a lock."
)

TEXTS = [
    "The quick brown fox",
    "A fast auburn fox leaps over a sleepy hound.",
    "",
    "Kubernetes",
    "fn claim_next_task(&self, agent_id: AgentId) -> Result<Option<TaskLease>, QueueError>",
    "Größenwahn, Übermut und café crème — naïve façade; 東京は日本の首都です。Ελληνικά καλημέρα",
    "deploy 🚀 failed ❌ retrying in 30s…",
    LONG,
    # Longer than MAX_TOKENS: checks the truncation.
    LONG + " " + LONG,
]


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu_erf(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def linear(x, w, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]


def embed(w, cfg, ids):
    """One text, no padding: [CLS] ... [SEP] ids -> unit vector."""
    n = len(ids)
    h = w["embeddings.word_embeddings.weight"][ids]
    h = h + w["embeddings.position_embeddings.weight"][:n]
    h = h + w["embeddings.token_type_embeddings.weight"][0]
    eps = cfg["layer_norm_eps"]
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = linear(h, w, p + "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = linear(h, w, p + "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = linear(h, w, p + "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = linear(ctx, w, p + "attention.output.dense")
        h = layer_norm(a + h, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        m = gelu_erf(linear(h, w, p + "intermediate.dense"))
        o = linear(m, w, p + "output.dense")
        h = layer_norm(o + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    # Every token is real (no padding), so the masked mean is the plain mean.
    pooled = h.mean(0)
    return pooled / np.linalg.norm(pooled)


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "DEVART_MODEL_DIR", "/var/lib/devart/models/all-minilm-l6-v2")
    weights_path = os.path.join(model_dir, "model.safetensors")
    w = {k: v.astype(np.float64) for k, v in load_file(weights_path).items() if v.dtype == np.float32}
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    with open(weights_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()

    cases = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        vec = embed(w, cfg, ids)
        cases.append({"text": text, "tokens": len(ids), "vector": [round(float(x), 7) for x in vec]})
    out = {
        "model": "all-MiniLM-L6-v2",
        "model_sha256": sha,
        "max_tokens": MAX_TOKENS,
        "generator": "scripts/reference-embeddings.py (numpy float64 BERT)",
        "cases": cases,
    }
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
