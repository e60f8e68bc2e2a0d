"""Text classification from word vectors (TextCNN, BiRNN) as a fine-tuning task, and its trained runs.

corpus -> tokens -> vocab (train split only) -> ids -> bucketed batches -> model -> run folder
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from sentiment.config import TextConfig
from sentiment.errors import SentimentError
from sentiment.runs import Run
from sentiment.runtime import Runtime
from sentiment.tasks import TaskData
from sentiment.text import fast
from sentiment.text.batching import BucketBatchSampler, Encoded, encode, pad_batch
from sentiment.text.corpus import Corpus
from sentiment.text.models import build_model, load_pretrained_embeddings
from sentiment.text.prepared import prepare_text
from sentiment.text.saved_run import TextRunFolder
from sentiment.text.vocab import PAD_ID, UNK_ID, Vocab
from sentiment.train import classification_report, evaluate, predict_logits

# Batch widths are rounded up to a multiple of this: oneDNN builds and caches a kernel for every input
# shape it meets, and one per exact review length grew a TextCNN run's memory from 1.1 to 3.2 GB.
PAD_MULTIPLE = 16


class TextBatches:
    """`(index, (ids, lengths), labels)` batches of similar-length reviews, padded per batch."""

    def __init__(
        self,
        enc: Encoded,
        labels: np.ndarray | None,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        pin_memory: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        pad: int = PAD_ID,
    ):
        self.enc = enc
        self.pad = pad
        self.labels = np.zeros(len(enc), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        self.sampler = BucketBatchSampler(
            enc.lengths, batch_size, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank
        )
        self.pin_memory = pin_memory

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            ids, lengths = pad_batch(self.enc, index, multiple=PAD_MULTIPLE, pad=self.pad)
            labels = torch.from_numpy(self.labels[index])
            if self.pin_memory:
                ids, lengths, labels = ids.pin_memory(), lengths.pin_memory(), labels.pin_memory()
            yield index, (ids, lengths), labels


def model_hyper(cfg: TextConfig) -> dict:
    if cfg.model == "birnn":
        return {"num_hiddens": cfg.num_hiddens, "num_layers": cfg.num_layers}
    return {"kernel_sizes": list(cfg.kernel_sizes), "num_channels": list(cfg.num_channels), "dropout": cfg.dropout}


def text_task_data(
    cfg, runtime: Runtime, train: Encoded, train_labels, test: Encoded, test_labels, classes, pad=PAD_ID
):
    """Encoded splits as the loop's batches: the training split shuffled in length buckets (this
    process's shard under torchrun), the test split in order."""
    from sentiment import distributed
    from sentiment.text.corpus import data_sources

    source, test_source = data_sources(cfg)
    return TaskData(
        train=TextBatches(
            train,
            np.asarray(train_labels, dtype=np.int64),
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            pin_memory=runtime.pin_memory,
            num_replicas=distributed.world_size(),
            rank=distributed.rank(),
            pad=pad,
        ),
        # evaluation in training-sized batches: larger ones were no faster and held 4x the activations
        test=TextBatches(test, None, cfg.batch_size, shuffle=False, pin_memory=runtime.pin_memory, pad=pad),
        test_labels=torch.tensor(np.asarray(test_labels, dtype=np.int64)),
        classes=list(classes),
        train_examples=len(train),
        test_examples=len(test),
        source=source,
        test_source=test_source,
    )


class TextTask:
    """TextCNN or BiRNN over a GloVe-initialised vocabulary built from the training split."""

    kind = "text"
    allocator = "bounded"  # batch shapes change with every length bucket
    cpu_bf16 = True
    evaluate_before = False
    solver = False
    example_inputs = None
    head = "decoder"

    def __init__(self, cfg: TextConfig):
        self.cfg = cfg

    def data(self, runtime: Runtime, echo: Callable[[str], None]) -> TaskData:
        from sentiment.text.vectors import load_vectors

        started = time.perf_counter()
        cfg = self.cfg
        self.vectors = load_vectors(cfg.vectors)
        self.prepared = data = prepare_text(cfg)
        self.oov_words = len(self.vectors.missing(data.vocab))
        echo(
            f"data: {data.source}: {len(data.train):,} train / {len(data.test):,} test reviews, "
            f"{len(data.classes)} classes; vocab {len(data.vocab):,} ({self.oov_words:,} without a vector); "
            f"prepared in {time.perf_counter() - started:.1f} s"
        )
        return text_task_data(cfg, runtime, data.train, data.train_labels, data.test, data.test_labels, data.classes)

    def model(self, data: TaskData, runtime: Runtime, echo: Callable[[str], None]) -> torch.nn.Module:
        cfg = self.cfg
        model = build_model(
            cfg.model,
            vocab_size=len(self.prepared.vocab),
            embed_size=self.vectors.dim,
            num_classes=len(data.classes),
            cls=fast.model_class(cfg.model, runtime.device.type),
            **model_hyper(cfg),
        )
        load_pretrained_embeddings(model, self.vectors.embedding_for(self.prepared.vocab), freeze=cfg.freeze_embedding)
        return model.to(runtime.device)

    def record(self, data: TaskData) -> dict:
        return {
            "vocab_size": len(self.prepared.vocab),
            "embed_size": self.vectors.dim,
            "model_hyper": model_hyper(self.cfg),
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
    def classifier(cls, run: Run, device: str) -> TextClassifier:
        return TextClassifier(run, device)


def corpus_labels(corpus: Corpus, classes: list[str]) -> torch.Tensor:
    """The test split's labels as indices into a run's `classes`; a label the run never saw is an error."""
    index = {name: i for i, name in enumerate(classes)}
    remap = []
    for name in corpus.classes:
        if name not in index:
            raise SentimentError(
                f"{corpus.source}: label {name!r} is not one of the run's classes ({', '.join(classes)})"
            )
        remap.append(index[name])
    return torch.tensor([remap[ex.label] for ex in corpus.test], dtype=torch.long)


class EncodedTextClassifier:
    """A trained text run: texts -> ids (`encode`) -> a model in `runtime` -> class probabilities.
    A family sets `run`, `classes`, `model`, `runtime`, `eval_batch_size` and `pad`, and `encode`."""

    run: Run
    classes: list[str]
    model: torch.nn.Module
    runtime: Runtime
    eval_batch_size: int
    pad: int = PAD_ID
    unk: int | None = UNK_ID  # the unknown-token id; None where every text is made of known tokens

    def encode(self, texts: Sequence[str], *, check: bool = True) -> Encoded:
        """Ids of `texts`; with `check`, an empty or absurdly long text is a user error."""
        raise NotImplementedError

    def model_for(self, texts: int) -> torch.nn.Module:
        """The form of the model that predicts this many texts fastest."""
        return self.model

    def known(self, enc: Encoded) -> list[bool]:
        if self.unk is None:
            return [True] * len(enc)
        return enc.has_other_than([self.unk, *getattr(self, "special", ())])  # [CLS], [SEP]: not words

    def knows_a_word(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text has a token the model knows (not only its unknown-token id)."""
        return self.known(self.encode(texts))

    def probabilities(self, texts: Sequence[str], *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        return self._probabilities(self.encode(texts), batch_size, progress)

    def scores(self, texts: Sequence[str], *, batch_size: int = 256, progress: bool = False):
        """`(probabilities [n, classes], whether each text has a word the model knows)`, one encoding."""
        enc = self.encode(texts)
        return self._probabilities(enc, batch_size, progress), self.known(enc)

    def _probabilities(self, enc: Encoded, batch_size: int, progress: bool) -> torch.Tensor:
        batches = TextBatches(enc, None, batch_size, shuffle=False, pad=self.pad)
        model = self.model_for(len(enc))
        logits = predict_logits(model, batches, self.runtime, size=len(enc), progress=progress, total=len(batches))
        return logits.softmax(dim=1)

    def evaluate(self, corpus: Corpus, *, progress: bool = True) -> dict:
        labels = corpus_labels(corpus, self.classes)
        enc = self.encode([ex.text for ex in corpus.test], check=False)
        # as training evaluated: training-sized batches
        batches = TextBatches(enc, None, self.eval_batch_size, shuffle=False, pad=self.pad)
        result, logits = evaluate(self.model, batches, labels, self.runtime, progress=progress, total=len(batches))
        return classification_report(labels, logits.argmax(1), self.classes) | {"loss": result.loss}


class TextClassifier(EncodedTextClassifier):
    """A trained TextCNN or BiRNN run: model, vocabulary, tokenizer and classes from its folder."""

    def __init__(self, run: Run, device: str = "cpu"):
        folder = TextRunFolder(run)
        cfg = folder.config
        self.run = run
        self.folder = folder
        self.classes: list[str] = folder.classes
        self.vocab = folder.vocab
        self.eval_batch_size: int = cfg.get("batch_size", 64)
        self.runtime = Runtime.resolve(device, cfg.get("precision", "auto"), cpu_bf16=TextTask.cpu_bf16)
        state = folder.state
        self.model = build_model(
            cfg["model"],
            vocab_size=len(self.vocab),
            embed_size=state["embedding.weight"].shape[1],
            num_classes=len(self.classes),
            cls=fast.model_class(cfg["model"], self.runtime.device.type),
            **folder.meta["model_hyper"],
        )
        run.load_into(self.model, state)
        self.model.to(self.runtime.device).eval()
        self._many: torch.nn.Module | None = None  # the form for many texts, built when first needed
        self.always_many = False

    def encode(self, texts: Sequence[str], *, check: bool = True) -> Encoded:
        if check:
            return self.folder.encode(texts)
        return encode((self.folder.tokenize(t) for t in texts), self.vocab, self.folder.max_len)

    def model_for(self, texts: int) -> torch.nn.Module:
        if texts < fast.LOOKUP_MIN_TEXTS and not self.always_many:
            return self.model
        if self._many is None:
            self._many = fast.for_many_texts(self.model, max(texts, fast.LOOKUP_MIN_TEXTS), self.runtime.precision)
        return self._many

    def serve_many(self) -> None:
        """Answer every batch, however small, in the form for many texts (built now), as a server
        does: its answers are then those `predict` gives for a file of reviews."""
        self.always_many = True
        self.model_for(fast.LOOKUP_MIN_TEXTS)
