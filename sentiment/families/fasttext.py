"""fastText's supervised classifier (`--model fasttext`): the mean of the embeddings of a review's
words and of its word pairs -> Linear (Joulin et al., 2016, "Bag of Tricks for Efficient Text
Classification").

Words are the vocabulary of the training split, their embeddings started from GloVe; a word pair
(or, with `--ngrams 3`, a triple) has no vocabulary of its own: it is hashed from the ids of its
words into one of `--buckets` rows of a second table, so any pair, seen in training or not, has a
row. Both tables are read by `EmbeddingBag`s with sparse gradients, so a step touches only the
rows of the batch's words and pairs: an epoch over IMDb takes seconds. fastText itself trains them
by SGD with a linearly decaying learning rate (`--optimizer sgd`); the default here is Adagrad,
whose step size per parameter suits rows that only a few reviews update, under the same decay.

This module is the whole family: its settings, its task, its forms and `choose`, its classifier and
its exact explanation. The logits are linear in the mean embedding, so the margin (the predicted
class's logit minus the mean of the others') is the bias plus, for every word and pair, (margin
weights) x (its row) / (how many words and pairs the review has); a word gets its own term and half
of each pair it is in (a third of each triple).

| form      | used for                          | what it does                                  |
|-----------|-----------------------------------|-----------------------------------------------|
| `numpy`   | predicting a few texts on the CPU | the forward pass in numpy: no torch import    |
| `torch`   | everything else                   | `FastText`, the plain model                   |
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from sentiment.config import default, setting
from sentiment.errors import SentimentError
from sentiment.registry import Family, register, torch_forms
from sentiment.runs import Run
from sentiment.text.saved_run import NumpyClassifier, TextRunFolder
from sentiment.text.wordvectors import WordVectorClassifier, WordVectorSettings, WordVectorTask, open_fastest

NUMPY_MAX_TEXTS = 16  # up to this many texts, numpy answers before torch would have been imported
SPARSE_OPTIMIZERS = ("adagrad", "sgd")  # those of config.OPTIMIZERS that step on sparse gradients
HASH_PRIME = 116_049_371  # n-gram hash: h = h * HASH_PRIME + id, over the n-gram's ids, modulo the buckets


@dataclass(kw_only=True)
class FastTextSettings(WordVectorSettings):
    ngrams: int = setting(2, "words and word sequences up to this long (2: words and pairs)", at_least=1)
    buckets: int = setting(500_000, "table rows the word sequences are hashed into", at_least=1)
    min_freq: int = default(WordVectorSettings, "min_freq", 2)
    max_len: int = default(WordVectorSettings, "max_len", 2000)
    epochs: int = default(WordVectorSettings, "epochs", 3)
    batch_size: int = default(WordVectorSettings, "batch_size", 32)
    optimizer: str = default(
        WordVectorSettings, "optimizer", "adagrad", help="adagrad or sgd (those that step on sparse gradients)"
    )
    lr: float = default(WordVectorSettings, "lr", 0.1)
    momentum: float = default(WordVectorSettings, "momentum", 0.0)
    schedule: str = default(WordVectorSettings, "schedule", "linear")
    warmup: float = default(WordVectorSettings, "warmup", 0.0)
    loss_reduction: str = default(WordVectorSettings, "loss_reduction", "sum")


def choose(device: str, *, texts: int | None = None) -> str:
    """The form to run on `device` ("cpu" or "cuda") for `texts` texts (None: training)."""
    if texts is not None and device == "cpu" and texts <= NUMPY_MAX_TEXTS:
        return "numpy"
    return "torch"


def ngram_rows(ids: np.ndarray, buckets: int, ngrams: int) -> list[np.ndarray]:
    """For n = 2..`ngrams`, the n-gram table's rows of a review's n-grams: `[len(ids) - n + 1]` each."""
    out = []
    ids = ids.astype(np.int64)
    h = ids
    for n in range(2, ngrams + 1):
        h = (h[:-1] * HASH_PRIME + ids[n - 1 :]) % buckets  # the hash of the n-grams ending one later
        out.append(h)
    return out


# -- the numpy form ------------------------------------------------------------------------------


def numpy_logits(w: dict[str, np.ndarray], ids: np.ndarray, hyper: dict) -> np.ndarray:
    """One review's logits, in numpy."""
    ids = ids.astype(np.int64)
    grams = ngram_rows(ids, hyper["buckets"], hyper["ngrams"])
    total = w["embedding.weight"][ids].sum(0)
    for rows in grams:
        total = total + w["ngram_embedding.weight"][rows].sum(0)
    mean = total / (len(ids) + sum(len(r) for r in grams))
    return w["decoder.weight"] @ mean + w["decoder.bias"]


def _keys(ngrams: int) -> set[str]:
    grams = {"ngram_embedding.weight"} if ngrams > 1 else set()
    return {"embedding.weight", "decoder.weight", "decoder.bias"} | grams


def open_numpy(run: Run) -> NumpyClassifier | None:
    """The run in the numpy form (None where its weights are not fastText's tables and a linear layer)."""
    text_run = TextRunFolder(run, framework="numpy")
    w = text_run.state
    hyper = dict(text_run.meta["model_hyper"])
    if set(w) != _keys(hyper.get("ngrams", 1)):
        return None
    return NumpyClassifier(
        text_run,
        lambda ids: numpy_logits(w, ids, hyper),
        full=lambda: FastTextClassifier(run, "cpu"),
        explainer=lambda: FastTextExplainer(run),
    )


# -- the exact explanation -----------------------------------------------------------------------


class FastTextExplainer:
    """Exact per-word contributions of a fastText run, in numpy float64."""

    def __init__(self, run: Run):
        folder = TextRunFolder(run, framework="numpy")
        self.folder = folder
        self.classes = folder.classes
        self.w = {k: v.astype(np.float64) for k, v in folder.state.items()}
        self.hyper = dict(folder.meta["model_hyper"])

    def explain(self, text: str):
        from sentiment.explain import explanation, margin_weights

        spans, enc, cut = self.folder.encode_spans(text)
        ids = enc.ids.astype(np.int64)
        w, h = self.w, self.hyper
        logits = numpy_logits(w, ids, h)
        m = margin_weights(len(logits), int(logits.argmax()), own=self.folder.multi_label is not None)
        direction = m @ w["decoder.weight"]  # a row's margin term, before the mean's division
        contrib = w["embedding.weight"][ids] @ direction
        grams = ngram_rows(ids, h["buckets"], h["ngrams"])
        for n, rows in enumerate(grams, start=2):
            terms = w["ngram_embedding.weight"][rows] @ direction
            for j in range(n):  # an n-gram's term is shared by its n words
                contrib[j : j + len(rows)] += terms / n
        contrib = contrib / (len(ids) + sum(len(r) for r in grams))
        if not spans:  # nothing but spaces and newlines: one <unk> was read
            contrib = contrib[:0]
        bias = float(m @ w["decoder.bias"])
        return explanation(text, self.classes, logits, spans, contrib[: len(spans)], "exact", bias=bias, cut=cut,
                           rating=self.folder.rating, multi_label=self.folder.multi_label)  # fmt: skip


# -- the torch form ------------------------------------------------------------------------------


@functools.cache
def nets() -> SimpleNamespace:
    """The torch module: `FastText`."""
    import torch
    from torch import nn

    from sentiment.text.batching import full_lengths

    class FastText(nn.Module):
        """Takes `ids [B, T]` (padded) and `lengths [B]`; gives logits `[B, classes]`: the mean of the
        rows of a review's words (`embedding`) and n-grams (`ngram_embedding`), then `decoder`.
        Positions past a review's end are read with weight 0, which keeps them out of the sums and
        their gradients (cheaper than the bags' `padding_idx`)."""

        def __init__(
            self, vocab_size: int, embed_size: int, num_classes: int = 2, buckets: int = 2_000_000, ngrams: int = 2
        ):
            super().__init__()
            self.buckets, self.ngrams = buckets, ngrams
            self.embedding = nn.EmbeddingBag(vocab_size, embed_size, mode="sum", sparse=True)
            if ngrams > 1:
                self.ngram_embedding = nn.EmbeddingBag(buckets, embed_size, mode="sum", sparse=True)
            self.decoder = nn.Linear(embed_size, num_classes)
            with torch.no_grad():  # fastText's start: small random rows, a zero output layer
                for table in self.tables():
                    table.weight.uniform_(-1 / embed_size, 1 / embed_size)
            nn.init.zeros_(self.decoder.weight)
            nn.init.zeros_(self.decoder.bias)

        def tables(self) -> list[nn.EmbeddingBag]:
            return [self.embedding, self.ngram_embedding] if self.ngrams > 1 else [self.embedding]

        def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            steps = ids.shape[1]
            lengths = full_lengths(ids, lengths)
            positions = torch.arange(steps, device=ids.device)
            inside = positions[None, :] < lengths[:, None]
            weight = self.decoder.weight
            total = self.embedding(ids, per_sample_weights=inside.to(weight.dtype))
            count = lengths.clone()
            h = ids.long()
            for n in range(2, min(self.ngrams, steps) + 1):
                h = (h[:, :-1] * HASH_PRIME + ids[:, n - 1 :]) % self.buckets
                inside = positions[None, : steps - n + 1] + n <= lengths[:, None]  # the n-gram ends in the review
                total = total + self.ngram_embedding(h, per_sample_weights=inside.to(weight.dtype))
                count = count + inside.sum(1)
            return self.decoder(total / count[:, None].to(total.dtype))

    return SimpleNamespace(FastText=FastText)


__getattr__ = torch_forms(__name__, nets)  # `from sentiment.families.fasttext import ...` of a torch module


# -- training and trained runs -------------------------------------------------------------------


class FastTextTask(WordVectorTask):
    """fastText over a GloVe-initialised vocabulary built from the training split, plus hashed n-grams."""

    cpu_bf16 = False  # a mean of embeddings and one small product: nothing for bf16 to speed up

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.optimizer not in SPARSE_OPTIMIZERS:
            raise SentimentError(
                f"--model fasttext updates only the rows a batch reads (sparse gradients), which "
                f"--optimizer {cfg.optimizer} cannot; use --optimizer {' or '.join(SPARSE_OPTIMIZERS)}"
            )

    @classmethod
    def network(cls, device: str, *, vocab_size: int, embed_size: int, num_classes: int, **hyper):
        import torch

        # the default, said out loud: torch otherwise warns about it at the first sparse step
        torch.sparse.check_sparse_tensor_invariants.disable()
        return nets().FastText(vocab_size, embed_size, num_classes=num_classes, **hyper)

    def hyper(self) -> dict:
        return {"buckets": self.cfg.buckets, "ngrams": self.cfg.ngrams}

    def start_from(self, model, vectors) -> None:
        """The words' rows start from their word vectors; the n-grams' rows keep their random start."""
        import torch

        table = model.embedding.weight
        if vectors.shape != table.shape:
            raise SentimentError(f"word vectors of shape {tuple(vectors.shape)} do not fit {tuple(table.shape)}")
        with torch.no_grad():
            table.copy_(vectors)

    @classmethod
    def tiny_settings(cls, folder) -> dict:
        return {"epochs": 1, "min_freq": 1, "max_len": 100, "batch_size": 16, "buckets": 1000}


class FastTextClassifier(WordVectorClassifier):
    """A trained fastText run; exact explanations."""

    def __init__(self, run: Run, device: str = "cpu"):
        super().__init__(run, device, FastTextTask)
        self._explainer: FastTextExplainer | None = None

    def explain(self, text: str):
        if self._explainer is None:
            self._explainer = FastTextExplainer(self.run)
        return self._explainer.explain(text)


def open_run(run: Run, device: str = "cpu", *, texts: int | None = None):
    """The run in the form that answers `texts` texts fastest: numpy for a few, else torch."""
    return open_fastest(run, device, texts, choose=choose, numpy_form=open_numpy, torch_form=FastTextClassifier)


register(
    Family(
        name="fasttext",
        kind="text",
        settings=FastTextSettings,
        task=FastTextTask,
        open=open_run,
        summary="fastText: the mean of word and hashed word-pair embeddings, then a linear layer",
    )
)
