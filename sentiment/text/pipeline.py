"""Text runs end to end: prepare the data, train a model into a run folder, and use a run folder.

corpus -> tokens -> vocab (train split only) -> ids -> bucketed batches -> model -> run folder
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from sentiment.config import TextConfig, to_dict
from sentiment.errors import SentimentError
from sentiment.finetune import count_parameters, param_groups
from sentiment.runs import Run
from sentiment.runtime import tune_allocator
from sentiment.text.batching import BucketBatchSampler, Encoded, encode, pad_batch
from sentiment.text.corpus import Corpus
from sentiment.text.models import build_model, for_prediction, load_pretrained_embeddings
from sentiment.text.prepared import prepare_text
from sentiment.text.quick import TextRun
from sentiment.text.vocab import Vocab
from sentiment.train import (
    Loop,
    evaluate,
    make_optimizer,
    make_scheduler,
    predict_logits,
    resolve_device,
    resolve_precision,
    seed_everything,
)

FAST_PATH_MIN_TEXTS = 256
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
    ):
        self.enc = enc
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
            ids, lengths = pad_batch(self.enc, index, multiple=PAD_MULTIPLE)
            labels = torch.from_numpy(self.labels[index])
            if self.pin_memory:
                ids, lengths, labels = ids.pin_memory(), lengths.pin_memory(), labels.pin_memory()
            yield index, (ids, lengths), labels


def model_hyper(cfg: TextConfig) -> dict:
    if cfg.model == "birnn":
        return {"num_hiddens": cfg.num_hiddens, "num_layers": cfg.num_layers}
    return {"kernel_sizes": list(cfg.kernel_sizes), "num_channels": list(cfg.num_channels), "dropout": cfg.dropout}


def train_text(
    cfg: TextConfig,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    after_epoch: Callable[[dict], None] | None = None,
) -> Run:
    """Train `cfg.model` on `cfg.data` and write a run folder; return it. `after_epoch(metrics)` is
    called after each epoch is saved. Under torchrun every process calls this; rank 0 writes."""
    return _train_text(cfg, progress=progress, echo=echo, after_epoch=after_epoch)


def resume_text(
    run_path: str | Path,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    after_epoch: Callable[[dict], None] | None = None,
) -> Run:
    """Continue an interrupted text run from its `checkpoint.pt`, with the config it was started with."""
    from sentiment.config import apply

    run = Run.open_for_resume(run_path)
    meta = run.read_meta("text", "; resume it with the command that started it")
    cfg = apply(TextConfig(), meta["config"], str(run.file("config.json")))
    state = run.load_checkpoint()
    if int(state["epoch"]) >= cfg.epochs and not state.get("position"):
        raise SentimentError(f"{run.path} already finished its {cfg.epochs} epochs; nothing to resume")
    return _train_text(cfg, progress=progress, echo=echo, after_epoch=after_epoch, run=run, state=state)


def _train_text(cfg, *, progress, echo, after_epoch, run: Run | None = None, state: dict | None = None) -> Run:
    from sentiment import distributed
    from sentiment.text.vectors import load_vectors

    started = time.perf_counter()
    tune_allocator(keep_all=False)
    main = distributed.is_main()
    if not main:
        progress, echo = False, (lambda _: None)
    device = distributed.setup(resolve_device(cfg.device))
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    vectors = load_vectors(cfg.vectors)
    data = prepare_text(cfg)
    if not len(data.test):
        raise SentimentError("the test split is empty")
    embedding = vectors.embedding_for(data.vocab)
    oov_words = len(vectors.missing(data.vocab))
    classes = data.classes
    echo(
        f"data: {data.source}: {len(data.train):,} train / {len(data.test):,} test reviews, "
        f"{len(classes)} classes; vocab {len(data.vocab):,} ({oov_words:,} without a vector); "
        f"prepared in {time.perf_counter() - started:.1f} s"
    )

    seed_everything(cfg.seed)
    hyper = model_hyper(cfg)
    model = build_model(
        cfg.model, vocab_size=len(data.vocab), embed_size=vectors.dim, num_classes=len(classes), **hyper
    )
    load_pretrained_embeddings(model, embedding, freeze=cfg.freeze_embedding)
    model.to(device)
    trainable, total = count_parameters(model)
    model = distributed.wrap(model, device)
    groups = param_groups(model, cfg.lr, weight_decay=cfg.weight_decay)
    optimizer = make_optimizer(cfg.optimizer, groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg.schedule, optimizer, epochs=cfg.epochs, step_size=cfg.step_size, gamma=cfg.gamma)
    pin = device.type == "cuda"
    loop = Loop(
        train_batches=TextBatches(
            data.train,
            data.train_labels,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            pin_memory=pin,
            num_replicas=distributed.world_size(),
            rank=distributed.rank(),
        ),
        # evaluation in training-sized batches: larger ones were no faster and held 4x the activations
        test_batches=TextBatches(data.test, None, cfg.batch_size, shuffle=False, pin_memory=pin),
        test_labels=torch.from_numpy(np.array(data.test_labels)),
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        epochs=cfg.epochs,
        grad_clip=cfg.grad_clip,
        progress=progress,
        precision=precision,
    )

    if run is not None:  # resuming: the folder, its config and vocabulary are there already
        if Vocab.load(run.file("vocab.json")) != data.vocab:
            raise SentimentError(
                f"the data no longer gives the vocabulary {run.path} was trained with; resume needs the same data"
            )
        echo(f"resuming {run.path} after {state['epoch']} complete epoch(s)")
    elif main:
        run = Run.create(cfg.out, cfg.model)
        meta = {
            "kind": "text",
            "config": to_dict(cfg),
            "classes": classes,
            "vocab_size": len(data.vocab),
            "embed_size": vectors.dim,
            "model_hyper": hyper,
            "vectors_name": vectors.name,
            "parameters": {"trainable": trainable, "total": total},
            "device": str(device),
            "precision": precision,
            "processes": distributed.world_size(),
        }
        run.save_json("config.json", meta)
        data.vocab.save(run.file("vocab.json"))
    else:
        run = Run(Path(cfg.out) / f"(rank {distributed.rank()})")  # keeps metrics in memory, writes nothing
    echo(
        f"run: {run.path}  ({cfg.model}, {trainable:,} trainable of {total:,} parameters, device {device}, "
        f"{precision}, {distributed.world_size()} process(es))"
    )

    def summary(status: str) -> dict:
        return {
            "model": cfg.model,
            "status": status,
            **run.figures(),
            "train_examples": len(data.train),
            "test_examples": len(data.test),
            "wall_s": round(time.perf_counter() - started, 2),
            "vocab_size": len(data.vocab),
            "oov_words": oov_words,
            "train_tokens": data.train_tokens,
            "tokenizer": cfg.tokenizer,
            "classes": classes,
            "device": str(device),
            "precision": precision,
        }

    run.train(model, loop, summary, echo, after_epoch, resume=state)
    if distributed.world_size() > 1:  # a record that every process ended with the same weights
        digests = distributed.weight_digests(model)
        if main:
            run.save_json("summary.json", {**run.read_json("summary.json"), "rank_weight_digests": digests})
    return run


# -- using a run folder ---------------------------------------------------------------------------


class TextClassifier:
    """A trained text run, ready to predict: model, vocabulary, tokenizer and classes from its folder."""

    def __init__(self, run: Run, device: str = "cpu"):
        text_run = TextRun(run)
        cfg = text_run.config
        self.run = run
        self.classes: list[str] = text_run.classes
        self.vocab = text_run.vocab
        self.max_len: int = text_run.max_len
        self.tokenize = text_run.tokenize
        self.encode = text_run.encode
        self.eval_batch_size: int = cfg.get("batch_size", 64)
        self.device = resolve_device(device)
        self.precision = resolve_precision(cfg.get("precision", "auto"), self.device)
        state = text_run.state
        self.model = build_model(
            cfg["model"],
            vocab_size=len(self.vocab),
            embed_size=state["embedding.weight"].shape[1],
            num_classes=len(self.classes),
            **text_run.meta["model_hyper"],
        )
        run.load_into(self.model, state)
        self.model.to(self.device).eval()
        self._fast: torch.nn.Module | None = None  # built on the first prediction

    def probabilities(self, texts: Sequence[str], *, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        enc = self.encode(texts)
        batches = TextBatches(enc, None, batch_size, shuffle=False)
        model = self.model
        if len(enc) >= FAST_PATH_MIN_TEXTS:  # the look-up tables take a moment to build: worth it for many texts
            if self._fast is None:
                self._fast = for_prediction(self.model, self.precision)
            model = self._fast
        logits = predict_logits(
            model,
            batches,
            self.device,
            size=len(enc),
            progress=progress,
            total=len(batches),
            precision=self.precision,
        )
        return logits.softmax(dim=1)

    def evaluate(self, corpus: Corpus, *, progress: bool = True) -> dict:
        index = {name: i for i, name in enumerate(self.classes)}
        remap = []
        for name in corpus.classes:
            if name not in index:
                raise SentimentError(
                    f"{corpus.source}: label {name!r} is not one of the run's classes ({', '.join(self.classes)})"
                )
            remap.append(index[name])
        labels = torch.tensor([remap[ex.label] for ex in corpus.test], dtype=torch.long)
        enc = encode((self.tokenize(ex.text) for ex in corpus.test), self.vocab, self.max_len)
        batches = TextBatches(enc, None, self.eval_batch_size, shuffle=False)  # as training evaluated
        result, logits = evaluate(
            self.model, batches, labels, self.device, progress=progress, total=len(batches), precision=self.precision
        )
        return classification_report(labels, logits.argmax(1), self.classes) | {"loss": result.loss}


def classification_report(labels: torch.Tensor, predicted: torch.Tensor, classes: list[str]) -> dict:
    k = len(classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for i, name in enumerate(classes):
        tp = confusion[i, i].item()
        predicted_i = confusion[:, i].sum().item()
        actual_i = confusion[i, :].sum().item()
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / actual_i if actual_i else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual_i}
    return {
        "examples": len(labels),
        "accuracy": (labels == predicted).float().mean().item(),
        "f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "classes": classes,
        "confusion": confusion.tolist(),
    }


def open_classifier(run: str | Path | None, device: str = "cpu", runs_root: str = "runs") -> TextClassifier:
    return TextClassifier(Run.open(run, default_root=runs_root), device=device)
