"""What the text families share around their models: encoded splits as the loop's batches, a test
split's labels in a run's class order, and the classifier of a trained run whose model reads ids.

Imports no torch at import time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sentiment.errors import SentimentError
from sentiment.tasks import ClassifierBase, TaskData
from sentiment.text.batching import Encoded, TextBatches
from sentiment.text.vocab import PAD_ID, UNK_ID

if TYPE_CHECKING:  # the corpus readers (and the downloads behind them) load when data is read
    from sentiment.text.corpus import Corpus


def text_task_data(
    cfg, runtime, train: Encoded, train_labels, test: Encoded, test_labels, classes, pad=PAD_ID, *, val=None, passes=1
) -> TaskData:
    """Encoded splits as the loop's batches: the training split shuffled in length buckets (this
    process's shard under torchrun), the validation split (`val`: `(Encoded, labels)`, or None) and
    the test split in order. `passes`: shuffled passes over the training split per epoch."""
    import torch

    from sentiment import distributed
    from sentiment.text.batching import label_array
    from sentiment.text.corpus import data_sources

    source, test_source, val_source = data_sources(cfg)
    in_order = dict(shuffle=False, pin_memory=runtime.pin_memory, pad=pad)
    from sentiment.targets import rating_of

    val_enc, val_labels = val if val is not None and len(val[0]) else (None, None)
    train_labels = label_array(train_labels)
    return TaskData(
        train=TextBatches(
            train,
            train_labels,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            pin_memory=runtime.pin_memory,
            num_replicas=distributed.world_size(),
            rank=distributed.rank(),
            pad=pad,
            passes=passes,
        ),
        # evaluation in training-sized batches: larger ones were no faster and held 4x the activations
        test=TextBatches(test, None, cfg.batch_size, shuffle=False, pin_memory=runtime.pin_memory, pad=pad),
        test_labels=torch.from_numpy(label_array(test_labels)),
        classes=list(classes),
        train_examples=len(train),
        test_examples=len(test),
        source=source,
        test_source=test_source,
        val=TextBatches(val_enc, None, cfg.batch_size, **in_order) if val_enc is not None else None,
        val_labels=torch.from_numpy(label_array(val_labels)) if val_enc is not None else None,
        val_examples=len(val_enc) if val_enc is not None else 0,
        val_source=val_source,
        train_labels=train_labels,
        rating=rating_of(getattr(cfg, "target", "label"), train_labels),
        target=getattr(cfg, "target", "label"),
    )


def corpus_labels(corpus: Corpus, classes: list[str]):
    """The test split's labels as indices into a run's `classes` (a multi-label corpus: `[n, classes]`
    0/1 in the run's label order); a label the run never saw is an error."""
    import torch

    index = {name: i for i, name in enumerate(classes)}
    remap = []
    for name in corpus.classes:
        if name not in index:
            raise SentimentError(
                f"{corpus.source}: label {name!r} is not one of the run's classes ({', '.join(classes)})"
            )
        remap.append(index[name])
    if corpus.target == "multilabel":
        from sentiment.targets import multi_hot

        sets = [[remap[i] for i in ex.labels] for ex in corpus.test]
        return torch.from_numpy(multi_hot(sets, len(classes)))
    return torch.tensor([remap[ex.label] for ex in corpus.test], dtype=torch.long)


def evaluate_multilabel(clf, logits, corpus: Corpus) -> dict:
    """A multi-label run's `evaluate`: `targets.multilabel_report` of its probabilities on `corpus.test`
    (from `logits`, a torch tensor) at the run's thresholds, with the training loss as `loss`."""
    from sentiment.loop import MultiLabelObjective
    from sentiment.targets import multilabel_report

    if corpus.target != "multilabel":
        raise SentimentError(f"{corpus.source} was read with one label per text, not as a multi-label file")
    actual = corpus_labels(corpus, clf.classes)
    loss = MultiLabelObjective().mean_loss(logits, actual)
    report = multilabel_report(clf.answers(logits).numpy(), actual.numpy(), clf.classes, clf.multi_label.thresholds)
    return report | {"loss": loss}


class EncodedTextClassifier(ClassifierBase):
    """A trained text run: texts -> ids (`encode`) -> a model in `runtime` -> class probabilities.
    A family sets `run`, `classes`, `model`, `runtime`, `eval_batch_size` and `pad`, and `encode`."""

    run = None
    classes: list[str]
    model = None  # torch.nn.Module
    runtime = None  # runtime.Runtime
    eval_batch_size: int
    pad: int = PAD_ID
    unk: int | None = UNK_ID  # the unknown-token id; None where every text is made of known tokens
    special: Sequence[int] = ()  # ids that are no words ([CLS], [SEP])

    @property
    def precision(self) -> str:
        return self.runtime.precision

    def encode(self, texts: Sequence[str], *, check: bool = True) -> Encoded:
        """Ids of `texts`; with `check`, an empty or absurdly long text is a user error."""
        raise NotImplementedError

    def model_for(self, texts: int):
        """The form of the model that predicts this many texts fastest."""
        return self.model

    def known(self, enc: Encoded) -> list[bool]:
        if self.unk is None:
            return [True] * len(enc)
        return enc.has_other_than([self.unk, *self.special])

    def knows(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text has a token the model knows (not only its unknown-token id)."""
        return self.known(self.encode(texts))

    def scores(self, texts: Sequence[str], *, batch_size: int = 256, progress: bool = False):
        """`(probabilities [n, classes], whether each text has a word the model knows)`, one encoding."""
        enc = self.encode(texts)
        return self._probabilities(enc, batch_size, progress, texts), self.known(enc)

    def _probabilities(self, enc: Encoded, batch_size: int, progress: bool, texts: Sequence[str]):
        from sentiment.loop import predict_logits

        batches = TextBatches(enc, None, batch_size, shuffle=False, pad=self.pad)
        model = self.model_for(len(enc))
        logits = predict_logits(model, batches, self.runtime, size=len(enc), progress=progress, total=len(batches))
        return self.answers(self.beside(logits, texts))

    def beside(self, logits, texts: Sequence[str]):
        """The run's logits of `texts` from its network's `logits` (torch `[n, classes]`): a family
        whose run adds a model that reads the texts themselves adds its logits here."""
        return logits

    def outputs(self, texts: Sequence[str], *, progress: bool = False):
        """The model's outputs `[n, outputs]` (logits; a rating run's unclipped ratings) for `texts`,
        unchecked, in training-sized batches as training evaluated."""
        from sentiment.loop import predict_logits

        enc = self.encode(texts, check=False)
        batches = TextBatches(enc, None, self.eval_batch_size, shuffle=False, pad=self.pad)
        logits = predict_logits(self.model, batches, self.runtime, size=len(enc), progress=progress, total=len(batches))
        return self.beside(logits, texts)

    def evaluate(self, corpus: Corpus, *, progress: bool = True) -> dict:
        return report(self, self.outputs([ex.text for ex in corpus.test], progress=progress), corpus)


def report(clf, outputs, corpus: Corpus) -> dict:
    """A text run's `evaluate` report from its `outputs` (`clf.outputs`, torch tensor or numpy array)
    on `corpus.test`, whose examples need carry no text: `loop.classification_report` with the mean
    loss, or a rating run's `targets.evaluate_ratings`, a multi-label run's `evaluate_multilabel`."""
    import torch

    from sentiment.loop import Objective, classification_report

    outputs = torch.as_tensor(outputs)
    if clf.rating is not None:
        from sentiment.targets import evaluate_ratings

        return evaluate_ratings(clf.answers(outputs)[:, 0].numpy(), corpus)
    if clf.multi_label is not None:
        return evaluate_multilabel(clf, outputs, corpus)
    labels = corpus_labels(corpus, clf.classes)
    probs = outputs.softmax(dim=1)
    return classification_report(labels, outputs.argmax(1), clf.classes, probs) | {
        "loss": Objective().mean_loss(outputs, labels)
    }
