"""The linear baseline (`--model linear`): TF-IDF of words and word pairs -> logistic regression
(scikit-learn); for a rating run (`--target rating`), ridge regression, its penalty chosen on the
validation split; for a multi-label run (`--multi-label`), one binary logistic regression per label.

It trains in seconds and is the bar every other text model has to clear. It is a family like the
others (same data options, run folder, predict, evaluate, compare), fitted by its own solver
instead of the training loop. The run folder keeps the n-gram vocabulary (`tfidf.json`) and the
idf weights and coefficients (`model.safetensors`); predicting needs neither torch nor a pickle.

Training data too big for an exact vocabulary (`--features hashed`, which `auto` picks above
HASHED_ABOVE bytes of data) is hashed into `2**hash_bits` columns instead, read from disk a block
at a time (`sentiment.text.hashed`), and the logistic regression is fitted out of core by
stochastic gradient descent (scikit-learn's `SGDClassifier`): a few penalties side by side, several
passes, the pass and penalty best on validation kept. Memory then does not grow with the data.

Explanations are exact: the margin is the intercept plus feature x weight over the TF-IDF features;
a feature is shared by the n-gram occurrences counted in it, each occurrence's share by its words.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from sentiment.config import TextRun, setting
from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_path, atomic_write_json
from sentiment.registry import Family, register
from sentiment.runs import Run
from sentiment.targets import described
from sentiment.tasks import ClassifierBase, Task, TaskData
from sentiment.text.saved_run import check_texts

if TYPE_CHECKING:  # the corpus readers load when data is read
    from sentiment.text.corpus import Corpus
    from sentiment.text.hashed import HashedSplits

VOCABULARY = "tfidf.json"
WORDS_FILES = ("words.json", "words.safetensors")  # a `WordModel` in another family's run folder
FEATURES = ("auto", "exact", "hashed")
HASHED_ABOVE = 256 << 20  # bytes of data above which `--features auto` hashes
REVIEW_BYTES = 2048  # a review's size, roughly: a --limit-train of up to HASHED_ABOVE / this stays exact
SGD_ALPHAS = (1e-6, 3e-6, 1e-5)  # the out-of-core solver's candidate penalties, compared on validation
DEFAULT_SGD_ALPHA = 3e-6  # without a validation split


@dataclass(kw_only=True)
class LinearSettings(TextRun):
    ngrams: int = setting(2, "TF-IDF of 1- to N-word sequences", at_least=1)
    min_df: int = setting(2, "keep n-grams seen in at least this many reviews", at_least=1)
    c: float = setting(4.0, "inverse strength of the logistic regression's L2 penalty", above=0)
    alpha: float | None = setting(
        None,
        "the ridge penalty of a rating run (default: the best of 0.03-3 on the validation split; 1 without one)",
        above=0,
    )
    features: str = setting(
        "auto",
        "exact (an n-gram vocabulary, logistic regression), hashed (2**hash_bits hashed columns, fitted out of "
        "core by SGD; for data too big for a vocabulary) or auto (hashed above 256 MB of data)",
        choices=FEATURES,
    )
    hash_bits: int = setting(21, "hashed features: 2**this columns", at_least=10)
    passes: int = setting(
        6, "hashed features: passes of the solver over the training data; the best on validation is kept", at_least=1
    )


RIDGE_ALPHAS = (0.03, 0.1, 0.3, 1.0, 3.0)  # a rating run's candidate penalties, compared on validation MAE
DEFAULT_ALPHA = 1.0  # without a validation split


def _vectorizer(ngrams: int, min_df: int = 1, vocabulary: dict[str, int] | None = None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        ngram_range=(1, ngrams), min_df=min_df, sublinear_tf=True, dtype=np.float32, vocabulary=vocabulary
    )


def _terms(vectorizer) -> list[str]:
    """A fitted vectorizer's vocabulary as its columns' terms, in column order (what a run saves)."""
    return sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)


def _saved_vectorizer(ngrams: int, terms: list[str], idf: np.ndarray):
    """The vectorizer a run saved as `terms` (in column order) and `idf`, as it was fitted."""
    vectorizer = _vectorizer(ngrams, vocabulary={term: i for i, term in enumerate(terms)})
    vectorizer.idf_ = idf
    return vectorizer


@functools.cache
def nets() -> SimpleNamespace:
    """The torch module the run folder's weights are saved from: `TfidfLinear`."""
    import torch
    from torch import nn

    class TfidfLinear(nn.Module):
        """Logits of TF-IDF features: `idf` [F] and a linear layer [classes, F]; the coefficients of a
        two-class logistic regression are stored as two rows (-w/2, +w/2), so softmax gives its sigmoid."""

        def __init__(self, features: int, num_classes: int):
            super().__init__()
            self.register_buffer("idf", torch.ones(features))
            self.linear = nn.Linear(features, num_classes)
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

        def set_coefficients(self, coef: np.ndarray, intercept: np.ndarray) -> None:
            weight, bias = _as_rows(coef, intercept)
            with torch.no_grad():
                self.linear.weight.copy_(torch.from_numpy(weight))
                self.linear.bias.copy_(torch.from_numpy(bias))

    return SimpleNamespace(TfidfLinear=TfidfLinear)


def _as_rows(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression coefficients as `TfidfLinear` holds them: `(weight [classes, F], bias
    [classes])`, float32; a binary one's single row of log-odds as two rows (-w/2, +w/2)."""
    if coef.shape[0] == 1:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef.astype(np.float32), intercept.astype(np.float32)


def _logits(features, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return np.asarray(features @ weight.T) + bias


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _loss(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


class LinearTask(Task):
    """TF-IDF (1- to `--ngrams`-grams, sublinear tf, `--min-df`) and L2 logistic regression (`--c`)."""

    cpu_bf16 = False
    solver = True
    head = "linear"  # the logistic regression's coefficients (scaled when probabilities are calibrated)

    hashed: HashedSplits | None = None  # the data as hashed columns on disk (`--features hashed`)

    def _features(self) -> tuple[str, str]:
        """`(exact or hashed, why)`: `--features`, or for auto, hashed above HASHED_ABOVE bytes of data."""
        from sentiment.text.prepared import _source_bytes

        cfg = self.cfg
        classifier = getattr(cfg, "target", "label") == "label"
        if cfg.features == "hashed" and not classifier:
            raise SentimentError(
                "--features hashed fits classifiers; a rating or multi-label run needs --features exact"
            )
        if cfg.hash_bits > 26:
            raise SentimentError(f"--hash-bits must be at most 26, got {cfg.hash_bits}")
        if cfg.features != "auto":
            return cfg.features, f"--features {cfg.features}"
        if not classifier:
            return "exact", "a rating or multi-label run"
        size = _source_bytes(cfg)
        limited = cfg.limit_train is not None and cfg.limit_train * REVIEW_BYTES <= HASHED_ABOVE
        if size > HASHED_ABOVE and not limited:
            return "hashed", f"{size / (1 << 20):,.0f} MB of data, above {HASHED_ABOVE >> 20} MB"
        return "exact", f"{size / (1 << 20):,.0f} MB of data" + (", a --limit-train subset" if limited else "")

    def data(self, runtime, echo: Callable[[str], None]) -> TaskData:
        from sentiment.text.corpus import data_sources, load_subsets

        started = time.perf_counter()
        cfg = self.cfg
        kind, why = self._features()
        if kind == "hashed":
            from sentiment.text.hashed import HashedSplits

            self.hashed = HashedSplits(cfg, cfg.hash_bits)
            corpus = self.hashed.corpus
            train, val, test = (self.hashed.examples[s] for s in ("train", "val", "test"))
            self.n_features = self.hashed.columns
            features = (
                f"hashed TF-IDF features: 1- to {cfg.ngrams}-grams in 2**{cfg.hash_bits} columns, "
                f"{int((self.hashed.idf > 0).sum()):,} of them seen in at least {cfg.min_df} reviews ({why})"
            )
        else:
            corpus, train, val, test = load_subsets(cfg)
            self.vectorizer = _vectorizer(cfg.ngrams, cfg.min_df)
            self.train_x = self.vectorizer.fit_transform([ex.text for ex in train])
            self.x = {"val": self.vectorizer.transform([ex.text for ex in val]) if val else None,
                      "test": self.vectorizer.transform([ex.text for ex in test])}  # fmt: skip
            self.n_features = self.train_x.shape[1]
            features = (
                f"{self.n_features:,} TF-IDF features (1- to {cfg.ngrams}-grams seen in at least {cfg.min_df} "
                f"reviews; {why})"
            )
        source, test_source, val_source = data_sources(cfg)
        target = corpus.target
        self.train_y = corpus.targets(train)
        echo(
            f"data: {corpus.source}: {len(train):,} train / {len(val):,} validation / {len(test):,} test "
            f"reviews, {described(corpus.classes, target)}; {features}; prepared in "
            f"{time.perf_counter() - started:.1f} s"
        )
        import torch

        from sentiment.targets import rating_of

        return TaskData(
            train=None,
            test=None,
            test_labels=torch.from_numpy(corpus.targets(test)),
            classes=list(corpus.classes),
            train_examples=len(train),
            test_examples=len(test),
            source=source,
            test_source=test_source,
            val_labels=torch.from_numpy(corpus.targets(val)) if val else None,
            val_examples=len(val),
            val_source=val_source,
            train_labels=self.train_y,
            rating=rating_of(target, self.train_y),
            target=target,
        )

    def model(self, data: TaskData, runtime, echo: Callable[[str], None]):
        return nets().TfidfLinear(self.n_features, len(data.classes))

    def fit(self, model, data: TaskData, echo: Callable[[str], None]) -> dict:
        import torch
        from sklearn.linear_model import LogisticRegression

        cfg = self.cfg
        if data.rating is not None:
            return self._fit_ridge(model, data, echo)
        if data.target == "multilabel":
            return self._fit_per_label(model, data, echo)
        if self.hashed is not None:
            return self._fit_out_of_core(model, data, echo)
        started = time.perf_counter()
        balanced = "balanced" if cfg.class_weights == "auto" else None
        solver = LogisticRegression(C=cfg.c, max_iter=1000, random_state=cfg.seed, class_weight=balanced)
        solver.fit(self.train_x, self.train_y)
        seconds = time.perf_counter() - started
        model.set_coefficients(solver.coef_, solver.intercept_)
        with torch.no_grad():
            model.idf.copy_(torch.from_numpy(self.vectorizer.idf_.astype(np.float32)))
        weight, bias = model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()
        train_logits = _logits(self.train_x, weight, bias)
        metrics = {
            "epoch": 1,
            "train_loss": _loss(train_logits, self.train_y),
            "train_acc": _accuracy(train_logits, self.train_y),
            "train_examples": len(self.train_y),
            "train_s": round(seconds, 3),
            "train_examples_per_s": round(len(self.train_y) / max(seconds, 1e-9), 1),
        }
        if self.x["val"] is not None:
            val_logits = _logits(self.x["val"], weight, bias)
            metrics |= {
                "val_loss": _loss(val_logits, data.val_labels.numpy()),
                "val_acc": _accuracy(val_logits, data.val_labels.numpy()),
            }
        echo(
            f"fit: train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.3f}"
            + (f", val loss {metrics['val_loss']:.4f} acc {metrics['val_acc']:.3f}" if "val_acc" in metrics else "")
            + f" ({seconds:.1f} s)"
        )
        return metrics

    def _fit_out_of_core(self, model, data: TaskData, echo: Callable[[str], None]) -> dict:
        """Hashed features: logistic regressions fitted by SGD (`SGDClassifier`, log loss), one per
        penalty of SGD_ALPHAS side by side, `--passes` passes over the training rows (blocks in a
        new order each pass, rows shuffled within each); the penalty and pass with the best
        validation accuracy (ties: lower loss) are kept, the last pass without a validation split."""
        import torch
        from sklearn.linear_model import SGDClassifier
        from tqdm.auto import tqdm

        cfg, hashed = self.cfg, self.hashed
        y, k = self.train_y, len(data.classes)
        class_weight = None
        if cfg.class_weights == "auto":
            seen = np.bincount(y, minlength=k)
            class_weight = {c: len(y) / (k * n) for c, n in enumerate(seen) if n}
        has_val = bool(data.val_examples)
        alphas = SGD_ALPHAS if has_val else (DEFAULT_SGD_ALPHA,)
        solvers = {a: SGDClassifier(loss="log_loss", alpha=a, random_state=cfg.seed, class_weight=class_weight)
                   for a in alphas}  # fmt: skip

        def weights_of(alpha: float) -> tuple[np.ndarray, np.ndarray]:
            return _as_rows(solvers[alpha].coef_, solvers[alpha].intercept_)

        rng = np.random.default_rng(cfg.seed)
        blocks = hashed.block_count("train")
        best, by_pass = None, []
        started = time.perf_counter()
        bar = tqdm(total=cfg.passes * blocks, desc="fit", unit="block", leave=False, disable=None, delay=1.0,
                   dynamic_ncols=True)  # fmt: skip
        try:
            for done in range(1, cfg.passes + 1):
                for first, end, x in hashed.blocks("train", order=rng.permutation(blocks)):
                    inside = rng.permutation(end - first)
                    rows, labels = x[inside].astype(np.float64), y[first:end][inside]  # the solvers' dtype, once
                    for solver in solvers.values():
                        solver.partial_fit(rows, labels, classes=np.arange(k))
                    bar.update()
                if not has_val:
                    continue
                scores = self._scores({a: weights_of(a) for a in solvers}, "val")
                by_pass.append({f"{a:g}": round(f["acc"], 4) for a, f in scores.items()})
                echo(f"pass {done}/{cfg.passes}: val acc by alpha "
                     + ", ".join(f"{a:g} {f['acc']:.4f}" for a, f in scores.items()))  # fmt: skip
                for a, f in scores.items():
                    if best is None or (f["acc"], -f["loss"]) > (best["acc"], -best["loss"]):
                        best = {**f, "alpha": a, "pass": done, "weights": weights_of(a)}
        finally:
            bar.close()
        if best is None:
            best = {"alpha": alphas[0], "pass": cfg.passes, "weights": weights_of(alphas[0])}
        seconds = time.perf_counter() - started
        self.sgd = {"alpha": best["alpha"], "pass": best["pass"], "val_acc_by_pass": by_pass}
        weight, bias = best["weights"]
        with torch.no_grad():
            model.linear.weight.copy_(torch.from_numpy(weight))
            model.linear.bias.copy_(torch.from_numpy(bias))
            model.idf.copy_(torch.from_numpy(hashed.idf))
        train = self._scores({"kept": (weight, bias)}, "train")["kept"]
        metrics = {
            "epoch": 1,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "train_examples": len(y),
            "train_s": round(seconds, 3),
            "train_examples_per_s": round(len(y) * cfg.passes / max(seconds, 1e-9), 1),
        }
        if has_val:
            metrics |= {"val_loss": best["loss"], "val_acc": best["acc"]}
        echo(
            f"fit: SGD logistic regression, alpha {best['alpha']:g}, pass {best['pass']} of {cfg.passes} kept; "
            f"train loss {metrics['train_loss']:.4f} acc {metrics['train_acc']:.3f}"
            + (f", val loss {metrics['val_loss']:.4f} acc {metrics['val_acc']:.3f}" if has_val else "")
            + f" ({seconds:.1f} s)"
        )
        return metrics

    def _block_logits(self, weights: dict, split: str) -> dict:
        """Hashed features: the logits on `split` of each `(weight, bias)` in `weights`, one read of the split."""
        parts = {name: [] for name in weights}
        for _, _, x in self.hashed.blocks(split):
            for name, (weight, bias) in weights.items():
                parts[name].append(_logits(x, weight, bias))
        width = len(next(iter(weights.values()))[1])
        return {name: np.concatenate(p) if p else np.zeros((0, width)) for name, p in parts.items()}

    def _scores(self, weights: dict, split: str) -> dict:
        """Loss and accuracy on `split` of each `(weight, bias)` in `weights`, one read of the split."""
        labels = self.hashed.labels[split]
        return {
            name: {"loss": _loss(logits, labels), "acc": _accuracy(logits, labels)}
            for name, logits in self._block_logits(weights, split).items()
        }

    def _fit_ridge(self, model, data: TaskData, echo: Callable[[str], None]) -> dict:
        """A rating run: ridge regression of the ratings on the TF-IDF features; its penalty `--alpha`,
        or the one of RIDGE_ALPHAS whose fit to the training split has the lowest validation MAE."""
        import torch
        from sklearn.linear_model import Ridge

        from sentiment.loop import RatingObjective

        cfg = self.cfg
        objective = RatingObjective(data.rating)  # the figures the recipe scores the other splits with

        def figures(solver, x, y) -> dict:
            outputs = torch.from_numpy(solver.predict(x).astype(np.float32)[:, None])
            return objective.split_figures(outputs, y)

        started = time.perf_counter()
        val_x = self.x["val"]
        if cfg.alpha is not None:
            alphas = (cfg.alpha,)
        else:
            alphas = RIDGE_ALPHAS if val_x is not None else (DEFAULT_ALPHA,)
        fits = {a: Ridge(alpha=a, random_state=cfg.seed).fit(self.train_x, self.train_y) for a in alphas}
        scored = {a: figures(s, val_x, data.val_labels) for a, s in fits.items()} if val_x is not None else {}
        alpha = min(scored, key=lambda a: scored[a]["mae"]) if scored else alphas[0]  # the lowest validation MAE
        solver, val = fits[alpha], scored.get(alpha)
        tried = {f"{a:g}": round(f["mae"], 4) for a, f in scored.items()}
        seconds = time.perf_counter() - started
        self.alpha, self.alphas_tried = alpha, tried
        with torch.no_grad():
            model.linear.weight.copy_(torch.from_numpy(solver.coef_.reshape(1, -1).astype(np.float32)))
            model.linear.bias.fill_(float(solver.intercept_))
            model.idf.copy_(torch.from_numpy(self.vectorizer.idf_.astype(np.float32)))
        train = figures(solver, self.train_x, torch.from_numpy(self.train_y))
        metrics = {
            "epoch": 1,
            "train_loss": train["loss"],
            "train_mae": train["mae"],
            "train_examples": len(self.train_y),
            "train_s": round(seconds, 3),
            "train_examples_per_s": round(len(self.train_y) / max(seconds, 1e-9), 1),
        }
        if val is not None:
            metrics |= {f"val_{k}": v for k, v in val.items()}
        chosen = f"alpha {alpha:g}"
        if len(tried) > 1:
            chosen += f" (validation MAE by alpha: {', '.join(f'{a} {m:.3f}' for a, m in tried.items())})"
        echo(
            f"fit: ridge regression, {chosen}; train MAE {metrics['train_mae']:.3f}"
            + (f", val MAE {metrics['val_mae']:.3f}" if "val_mae" in metrics else "")
            + f" ({seconds:.1f} s)"
        )
        return metrics

    def _fit_per_label(self, model, data: TaskData, echo: Callable[[str], None]) -> dict:
        """A multi-label run: a binary L2 logistic regression (`--c`) per label, its log-odds the
        label's logit. A label every training text has (or none has) gets a constant logit."""
        import torch
        from sklearn.linear_model import LogisticRegression

        from sentiment.loop import MultiLabelObjective

        cfg = self.cfg
        started = time.perf_counter()
        features = self.train_x.shape[1]
        coef, intercept = np.zeros((len(data.classes), features)), np.zeros(len(data.classes))
        for j in range(len(data.classes)):
            y = self.train_y[:, j]
            share = float(y.mean())
            if share in (0.0, 1.0):
                intercept[j] = 9.0 if share else -9.0
                continue
            solver = LogisticRegression(C=cfg.c, max_iter=1000, random_state=cfg.seed).fit(self.train_x, y.astype(int))
            coef[j], intercept[j] = solver.coef_[0], solver.intercept_[0]
        seconds = time.perf_counter() - started
        model.set_coefficients(coef, intercept)
        with torch.no_grad():
            model.idf.copy_(torch.from_numpy(self.vectorizer.idf_.astype(np.float32)))
        objective = MultiLabelObjective()
        weight, bias = model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()

        def figures(x, y) -> dict:
            return objective.split_figures(torch.from_numpy(_logits(x, weight, bias).astype(np.float32)), y)

        train = figures(self.train_x, torch.from_numpy(self.train_y))
        metrics = {
            "epoch": 1,
            "train_loss": train["loss"],
            "train_micro_f1": train["micro_f1"],
            "train_examples": len(self.train_y),
            "train_s": round(seconds, 3),
            "train_examples_per_s": round(len(self.train_y) / max(seconds, 1e-9), 1),
        }
        if self.x["val"] is not None:
            metrics |= {f"val_{k}": v for k, v in figures(self.x["val"], data.val_labels).items()}
        echo(
            f"fit: {len(data.classes)} logistic regressions, one per label; train loss {metrics['train_loss']:.4f} "
            f"micro-F1 {metrics['train_micro_f1']:.3f}"
            + (
                f", val loss {metrics['val_loss']:.4f} micro-F1 {metrics['val_micro_f1']:.3f}"
                if "val_loss" in metrics
                else ""
            )  # fmt: skip
            + f" ({seconds:.1f} s)"
        )
        return metrics

    def logits(self, model, data: TaskData, split: str, runtime, *, progress: bool = False):
        import torch

        weight, bias = model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()
        if self.hashed is None:
            out = _logits(self.x[split], weight, bias)
        else:
            out = self._block_logits({split: (weight, bias)}, split)[split]
        return torch.from_numpy(out.astype(np.float32))

    def record(self, data: TaskData) -> dict:
        return {"features": self.n_features, "vocabulary_file": VOCABULARY}

    def save(self, run: Run, data: TaskData) -> None:
        if self.hashed is not None:
            atomic_write_json(run.file(VOCABULARY), {"ngrams": self.cfg.ngrams, "hash_bits": self.cfg.hash_bits})
            return
        atomic_write_json(run.file(VOCABULARY), {"ngrams": self.cfg.ngrams, "terms": _terms(self.vectorizer)})

    def check_resume(self, run: Run, data: TaskData) -> None:
        raise SentimentError(f"{run.path} is a linear run: it fits in one go; train it again instead")

    def close(self) -> None:
        if self.hashed is not None:
            self.hashed.close()

    def summary(self, data: TaskData) -> dict:
        out = {"features": self.n_features, "ngrams": self.cfg.ngrams}
        if self.hashed is not None:
            out |= {"hashed": True, "hash_bits": self.cfg.hash_bits, "sgd_alpha": self.sgd["alpha"],
                    "best_pass": self.sgd["pass"], "val_acc_by_pass": self.sgd["val_acc_by_pass"]}  # fmt: skip
        if data.rating is not None:
            out |= {"ridge_alpha": self.alpha, "val_mae_by_alpha": self.alphas_tried}
        return out

    @classmethod
    def tiny_settings(cls, folder) -> dict:
        return {"min_df": 1}


class LinearClassifier(ClassifierBase):
    """A trained linear run: the vectorizer rebuilt from `tfidf.json` and the idf weights, the
    coefficients from `model.safetensors`; numpy and scipy only."""

    def __init__(self, run: Run):
        meta = run.read_meta("text")
        self.run = run
        self.classes: list[str] = meta["classes"]
        saved = run.read_json(meta.get("vocabulary_file", VOCABULARY))
        state = run.load_weights("numpy")
        if "hash_bits" in saved:
            self.vectorizer = HashedTfidf(saved["ngrams"], saved["hash_bits"], state["idf"])
            size, what = self.vectorizer.columns, "columns"
        else:
            self.vectorizer = _saved_vectorizer(saved["ngrams"], saved["terms"], state["idf"])
            size, what = len(saved["terms"]), "terms"
        if state["idf"].shape[0] != size:
            raise SentimentError(
                f"{run.path}: {VOCABULARY} has {size:,} {what} but the weights {state['idf'].shape[0]:,}; "
                f"the run folder's files do not belong together"
            )
        self.weight, self.bias = state["linear.weight"], state["linear.bias"]
        self._explainer: LinearExplainer | None = None

    def knows(self, texts: Sequence[str]) -> list[bool]:
        """Whether each text has an n-gram among the features."""
        return (self.vectorizer.transform(list(texts)).getnnz(axis=1) > 0).tolist()

    def scores(self, texts: Sequence[str], **_) -> tuple[np.ndarray, list[bool]]:
        """`(probabilities, whether each text has an n-gram among the features)`, one transform."""
        check_texts(texts)
        features = self.vectorizer.transform(list(texts))
        logits = _logits(features, self.weight, self.bias)
        return self.answers(logits), (features.getnnz(axis=1) > 0).tolist()

    def explain(self, text: str):
        if self._explainer is None:
            self._explainer = LinearExplainer(self)
        return self._explainer.explain(text)

    def outputs(self, texts: Sequence[str], **_) -> np.ndarray:
        """The logits of `texts`, unchecked (see `EncodedTextClassifier.outputs`)."""
        return _logits(self.vectorizer.transform(list(texts)), self.weight, self.bias)

    def evaluate(self, corpus: Corpus, *, progress: bool = True) -> dict:
        from sentiment.text.classify import report

        return report(self, self.outputs([ex.text for ex in corpus.test]), corpus)


class HashedTfidf:
    """A hashed-features run's transform: texts -> TF-IDF rows over `2**bits` hashed columns."""

    def __init__(self, ngrams: int, bits: int, idf: np.ndarray):
        from sentiment.text.hashed import vectorizer

        self.counter, self.bits, self.columns, self.idf = vectorizer(ngrams, bits), bits, 1 << bits, idf
        self.ngram_range, self.token_pattern = self.counter.ngram_range, self.counter.token_pattern

    def transform(self, texts: list[str]):
        from sentiment.text.hashed import tfidf

        return tfidf(self.counter.transform(texts), self.idf)

    def column(self, term: str) -> int:
        from sentiment.text.hashed import column_of

        return column_of(term, self.bits)


class WordModel:
    """TF-IDF and a logistic regression with the family's defaults, fitted beside another model of
    the same texts (the transformer's few-shot recipe) whose logits it adds to: numpy and scipy only.
    Its `weight` and `bias` hold the coefficients times the share they are added at, so its
    `logits` are what it adds. Saved as WORDS_FILES (vocabulary and settings; the arrays)."""

    multi_label = None  # a word model is fitted beside classifiers only
    rating = None

    def __init__(self, vectorizer, weight: np.ndarray, bias: np.ndarray, classes: list[str], info: dict):
        self.vectorizer, self.weight, self.bias, self.classes, self.info = vectorizer, weight, bias, classes, info

    @classmethod
    def fit(cls, texts: Sequence[str], labels: np.ndarray, classes: list[str], *, share: float, balanced: bool,
            seed: int) -> WordModel | None:  # fmt: skip
        """TF-IDF of 1- to `ngrams`-grams seen in at least `min_df` texts and an L2 logistic regression
        at `c` (LinearSettings' defaults), its logits times `share`; None where no n-gram is in
        `min_df` texts (texts without spaces between their words, each one long token)."""
        from sklearn.linear_model import LogisticRegression

        defaults = LinearSettings()
        vectorizer = _vectorizer(defaults.ngrams, defaults.min_df)
        try:
            x = vectorizer.fit_transform(list(texts))
        except ValueError:  # scikit-learn's "no terms remain" / "empty vocabulary"
            return None
        solver = LogisticRegression(
            C=defaults.c, max_iter=1000, random_state=seed, class_weight="balanced" if balanced else None
        )
        solver.fit(x, labels)
        coef, intercept = _as_rows(solver.coef_, solver.intercept_)
        info = {"ngrams": defaults.ngrams, "min_df": defaults.min_df, "c": defaults.c, "share": share,
                "terms": x.shape[1]}  # fmt: skip
        return cls(vectorizer, coef * share, intercept * share, list(classes), info)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """`[n, classes]` float32: what the word model adds to the other model's logits."""
        return _logits(self.vectorizer.transform(list(texts)), self.weight, self.bias).astype(np.float32)

    def add_to(self, logits, texts: Sequence[str]):
        """The other model's `logits` of `texts` (a torch tensor `[n, classes]`) with the word model's added."""
        return logits + logits.new_tensor(self.logits(texts))

    def scale(self, factor: float) -> None:
        """Multiply its logits by `factor` (a temperature's 1 / T)."""
        self.weight, self.bias = self.weight * factor, self.bias * factor
        self.info["scale"] = self.info.get("scale", 1.0) * factor

    def save(self, run: Run) -> None:
        from safetensors.numpy import save_file

        arrays = {"idf": self.vectorizer.idf_.astype(np.float32), "weight": self.weight, "bias": self.bias}
        with atomic_path(run.file(WORDS_FILES[1])) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, str(tmp))
        atomic_write_json(run.file(WORDS_FILES[0]), {**self.info, "vocabulary": _terms(self.vectorizer)})

    @classmethod
    def load(cls, run: Run, classes: list[str]) -> WordModel | None:
        """The run folder's word model, or None where it has none."""
        if not run.file(WORDS_FILES[0]).exists():
            return None
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        saved = run.read_json(WORDS_FILES[0])
        try:
            arrays = load_file(str(run.file(WORDS_FILES[1])))
        except (SafetensorError, OSError) as e:
            where = run.file(WORDS_FILES[1])
            raise SentimentError(f"{where} is not readable ({e}); the run folder is damaged") from None
        terms = saved.pop("vocabulary")
        if not len(terms) == arrays["idf"].shape[0] == arrays["weight"].shape[1]:
            raise SentimentError(f"{run.path}: {WORDS_FILES[0]} and {WORDS_FILES[1]} do not belong together")
        vectorizer = _saved_vectorizer(saved["ngrams"], terms, arrays["idf"])
        return cls(vectorizer, arrays["weight"], arrays["bias"], classes, saved)

    def explainer(self) -> LinearExplainer:
        return LinearExplainer(self)


class LinearExplainer:
    """Exact per-word contributions of a linear (TF-IDF + logistic regression) run, or of a
    `WordModel` (anything with `classes`, `vectorizer`, `weight`, `bias` and `multi_label`)."""

    def __init__(self, clf: LinearClassifier | WordModel):
        self.clf = clf
        self.classes = self.clf.classes
        vectorizer = self.clf.vectorizer
        self.ngrams = vectorizer.ngram_range[1]
        # an n-gram's feature: hashed, or looked up in the vocabulary (None: not a feature)
        self.feature = vectorizer.column if isinstance(vectorizer, HashedTfidf) else vectorizer.vocabulary_.get
        self.token = re.compile(vectorizer.token_pattern)  # the vectorizer's own words, found with places

    def explain(self, text: str):
        from sentiment.explain import explanation, margin_weights

        check_texts([text])
        features = self.features(text)
        logits = self.logits(features)
        m = margin_weights(len(logits), int(logits.argmax()), own=self.clf.multi_label is not None)
        spans, contrib = self.contributions(text, features, m)
        return explanation(text, self.classes, logits, spans, contrib, "exact", bias=float(m @ self.clf.bias),
                           rating=self.clf.rating, multi_label=self.clf.multi_label)  # fmt: skip

    def features(self, text: str):
        """The text's TF-IDF row (sparse, float64), for `logits` and `contributions`."""
        return self.clf.vectorizer.transform([text]).tocsr().astype(np.float64)

    def logits(self, features) -> np.ndarray:
        return _logits(features, self.clf.weight.astype(np.float64), self.clf.bias)[0]

    def contributions(self, text: str, features, m: np.ndarray) -> tuple[list[tuple[str, int, int]], np.ndarray]:
        """`(the text's words as (word, start, end), each word's share of m @ logits)` for its
        `features`: the shares sum to it less `m @ bias`."""
        feature_weight = m @ self.clf.weight.astype(np.float64)  # [features]
        value = dict(zip(features.indices.tolist(), features.data.tolist(), strict=True))
        spans = [(t.group().lower(), t.start(), t.end()) for t in self.token.finditer(text)]
        words = [s[0] for s in spans]
        places: dict[int, list[tuple[int, int]]] = {}  # feature -> (first word, words) of each occurrence
        for n in range(1, self.ngrams + 1):
            for i in range(len(words) - n + 1):
                f = self.feature(" ".join(words[i : i + n]))
                if f is not None:
                    places.setdefault(f, []).append((i, n))
        contrib = np.zeros(len(spans))
        for f, occurrences in places.items():
            share = value.get(f, 0.0) * feature_weight[f] / len(occurrences)
            for i, n in occurrences:
                contrib[i : i + n] += share / n
        return spans, contrib


def open_run(run: Run, device: str = "cpu", *, texts: int | None = None) -> LinearClassifier:
    """The run's classifier: numpy and scipy whatever the device or the number of texts."""
    return LinearClassifier(run)


register(
    Family(
        name="linear",
        kind="text",
        settings=LinearSettings,
        task=LinearTask,
        open=open_run,
        summary="TF-IDF of words and word pairs with logistic regression (scikit-learn): the baseline",
    )
)
