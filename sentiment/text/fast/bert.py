"""A trained transformer run whose encoder is a BERT (all-MiniLM-L6-v2, the default) predicting a few
texts without importing `transformers`.

Importing `transformers` and building the model through it takes longer than torch itself; for a
handful of texts `sentiment predict` is then over 4 s from a cold start. Here the tokenizer is read
by the `tokenizers` package alone (the run's `encoder/tokenizer.json`, truncation and padding off,
then the run's head + tail cut) and the encoder is BERT's forward written out in torch over the
run's weights: embeddings (word + position + token type 0) -> LayerNorm -> per layer, self-attention
-> dense -> residual LayerNorm -> dense -> GELU -> dense -> residual LayerNorm; then the run's
pooling and head. One text at a time, so no padding and no attention mask. fp32. The tests hold it
to the `transformers` path; anything it does not know (another architecture, another activation or
position scheme, a tokenizer without tokenizer.json) goes to that path instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from sentiment.text.transformer import ENCODER_FOLDER, _kept, special_tokens_around

_ACTIVATIONS = {"gelu", "relu", "gelu_new", "gelu_pytorch_tanh"}


def _supported(config: dict) -> bool:
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act") in _ACTIVATIONS
        and config.get("position_embedding_type", "absolute") == "absolute"
    )


class QuickBertClassifier:
    """predict's few texts with a BERT transformer run, without `transformers`."""

    def __init__(self, run, meta: dict, folder: Path, config: dict):
        import torch
        from tokenizers import Tokenizer

        self.torch = torch
        cfg = meta["config"]
        self.run = run
        self.classes: list[str] = meta["classes"]
        self.max_len, self.head_tokens, self.pooling = cfg["max_len"], cfg["head_tokens"], cfg["pooling"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.config = config
        self.w = run.load_weights("pt")
        self.unk = self.tokenizer.token_to_id(json.loads((folder / "tokenizer.json").read_text())["model"]["unk_token"])
        self.before, self.after = special_tokens_around(
            self.tokenizer.encode("a", add_special_tokens=False).ids, self.tokenizer.encode("a").ids
        )

    def _ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(text).ids
        body = self.max_len - self.before - self.after
        return [ids[i] for i in _kept(len(ids), self.before, self.after, body, min(self.head_tokens, body))]

    def _logits(self, ids: list[int]):
        torch, F, w, c = self.torch, self.torch.nn.functional, self.w, self.config
        eps = c.get("layer_norm_eps", 1e-12)
        heads = c["num_attention_heads"]
        act = {
            "gelu": F.gelu,
            "relu": F.relu,
            "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
            "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
        }[c["hidden_act"]]

        def dense(x, name):
            return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        def norm(x, name):
            return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], eps)

        e = "encoder.embeddings"
        n = len(ids)
        x = w[f"{e}.word_embeddings.weight"][torch.tensor(ids)] + w[f"{e}.position_embeddings.weight"][:n]
        x = norm(x + w[f"{e}.token_type_embeddings.weight"][0], f"{e}.LayerNorm")
        for i in range(c["num_hidden_layers"]):
            p = f"encoder.encoder.layer.{i}"
            q, k, v = (
                dense(x, f"{p}.attention.self.{m}").view(n, heads, -1).transpose(0, 1)
                for m in ("query", "key", "value")
            )
            att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1) @ v  # [heads, n, d]
            x = norm(dense(att.transpose(0, 1).reshape(n, -1), f"{p}.attention.output.dense") + x,
                     f"{p}.attention.output.LayerNorm")  # fmt: skip
            h = dense(act(dense(x, f"{p}.intermediate.dense")), f"{p}.output.dense")
            x = norm(h + x, f"{p}.output.LayerNorm")
        pooled = x[0] if self.pooling == "cls" else x.mean(0)
        return dense(pooled, "head")

    def scores(self, texts: Sequence[str], **_):
        from sentiment.text.saved_run import check_texts

        check_texts(texts)
        torch = self.torch
        with torch.no_grad():
            rows = [self._ids(t) for t in texts]
            probs = torch.stack([self._logits(ids) for ids in rows]).softmax(dim=1)
        known = [any(i != self.unk for i in ids[self.before : len(ids) - self.after]) for ids in rows]
        return probs, known

    def probabilities(self, texts: Sequence[str], **_):
        return self.scores(texts)[0]


def open_quick_bert(run, meta: dict):
    """The run as a QuickBertClassifier, or None where only the `transformers` path can run it."""
    folder = run.file(meta.get("encoder_folder", ENCODER_FOLDER))
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not _supported(config) or not (folder / "tokenizer.json").is_file():
        return None
    return QuickBertClassifier(run, meta, folder, config)
