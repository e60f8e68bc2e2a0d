"""Prepared text: a corpus read, subset, tokenized, turned into a vocabulary and ids, once.

The result is cached under `<data dir>/cache/`, keyed by the source's checksum and every setting
that shapes it (tokenizer, min_freq, max_len, subsets), as plain `.npy` arrays that later runs
memory-map. A second run with the same data and settings skips reading and tokenizing entirely; a
damaged cache entry is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentiment import hub
from sentiment.config import held_out_seed
from sentiment.fsutil import atomic_write_json
from sentiment.text import imdb
from sentiment.text.batching import Encoded, encode
from sentiment.text.corpus import Corpus, balanced_subset, load_corpus, validation_split
from sentiment.text.labeled import is_labeled_file
from sentiment.text.tokenize import get_tokenizer
from sentiment.text.vocab import Vocab

CACHE_FORMAT = 2  # 2: a validation split
SPLITS = ("train", "val", "test")
ARRAYS = ("ids", "offsets", "lengths", "labels")


@dataclass
class PreparedText:
    vocab: Vocab
    train: Encoded
    val: Encoded
    test: Encoded
    train_labels: np.ndarray
    val_labels: np.ndarray
    test_labels: np.ndarray
    train_tokens: int
    classes: list[str]
    label_keys: list[str]
    source: str


def _build(cfg, corpus: Corpus) -> PreparedText:
    tokenize = get_tokenizer(cfg.tokenizer)
    k = len(corpus.classes)
    train = balanced_subset(corpus.train, cfg.limit_train, k, cfg.seed)
    train, val = validation_split(cfg, corpus, train)
    test = balanced_subset(corpus.test, cfg.limit_test, k, held_out_seed(cfg.seed))
    train_tok = [tokenize(ex.text) for ex in train]
    counter: Counter = Counter()
    for tokens in train_tok:
        counter.update(tokens)
    vocab = Vocab.build(counter, min_freq=cfg.min_freq)  # from the training split only
    return PreparedText(
        vocab=vocab,
        train=encode(train_tok, vocab, cfg.max_len),
        val=encode((tokenize(ex.text) for ex in val), vocab, cfg.max_len),
        test=encode((tokenize(ex.text) for ex in test), vocab, cfg.max_len),
        train_labels=corpus.targets(train),  # ratings (float32) for a rating run
        val_labels=corpus.targets(val),
        test_labels=corpus.targets(test),
        train_tokens=sum(counter.values()),
        classes=list(corpus.classes),
        label_keys=list(corpus.label_keys),
        source=corpus.source,
    )


# -- the cache -------------------------------------------------------------------------------------


def fingerprint(path: str | os.PathLike) -> str:
    """A file's sha256; for a folder, a digest of every file's relative path, size and mtime."""
    path = Path(path)
    if path.is_file():
        return hub.file_digest(path)
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "dir-" + h.hexdigest()


def _sources(cfg) -> list[Path]:
    val = [Path(cfg.val_data)] if cfg.val_data else []
    if cfg.data is not None and is_labeled_file(cfg.data):
        return [Path(cfg.data)] + ([Path(cfg.test_data)] if cfg.test_data else []) + val
    return [imdb.find_imdb(cfg.data), *val]


def cache_key(cfg, sources: list[Path]) -> str:
    labeled = is_labeled_file(sources[0])
    split_by_seed = cfg.limit_train or cfg.limit_test or (labeled and not cfg.test_data) or cfg.val_fraction
    parts = {
        "format": CACHE_FORMAT,
        "sources": [fingerprint(p) for p in sources],
        "tokenizer": cfg.tokenizer,
        "min_freq": cfg.min_freq,
        "max_len": cfg.max_len,
        "limit_train": cfg.limit_train,
        "limit_test": cfg.limit_test,
        "seed": cfg.seed if split_by_seed else None,
        "columns": [cfg.text_col, cfg.label_col, cfg.test_fraction] if labeled or cfg.val_data else None,
        "validation": cfg.val_fraction if not cfg.val_data else "file",
    }
    target = getattr(cfg, "target", "label")
    if target != "label":  # so that every classifier's entry keeps its key
        parts["target"] = target
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _save(folder: Path, data: PreparedText) -> None:
    """Write the entry into a temporary folder and rename it into place: readers see all or nothing."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sizes = {}
        for split in SPLITS:
            enc: Encoded = getattr(data, split)
            arrays = {
                "ids": enc.ids,
                "offsets": enc.offsets,
                "lengths": enc.lengths,
                "labels": getattr(data, f"{split}_labels"),
            }
            for name, arr in arrays.items():
                np.save(tmp / f"{split}_{name}.npy", np.ascontiguousarray(arr))
                sizes[f"{split}_{name}"] = [int(n) for n in arr.shape]
        data.vocab.save(tmp / "vocab.json")
        atomic_write_json(
            tmp / "meta.json",
            {
                "format": CACHE_FORMAT,
                "sizes": sizes,
                "train_tokens": data.train_tokens,
                "classes": data.classes,
                "label_keys": data.label_keys,
                "source": data.source,
            },
        )
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _load(folder: Path) -> PreparedText | None:
    """The cached entry, or None if it is missing or damaged in any way."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        arrays = {}
        for split in SPLITS:
            for name in ARRAYS:
                arr = np.load(folder / f"{split}_{name}.npy", mmap_mode="r", allow_pickle=False)
                if list(arr.shape) != meta["sizes"][f"{split}_{name}"]:
                    return None
                arrays[split, name] = arr
        encoded = {
            split: Encoded(ids=arrays[split, "ids"], offsets=arrays[split, "offsets"], lengths=arrays[split, "lengths"])
            for split in SPLITS
        }
        for enc in encoded.values():  # the ragged layout must add up, or the entry is damaged
            if len(enc) and int(enc.offsets[-1] + enc.lengths[-1]) != len(enc.ids):
                return None
        return PreparedText(
            vocab=Vocab.load(folder / "vocab.json"),
            train=encoded["train"],
            val=encoded["val"],
            test=encoded["test"],
            train_labels=arrays["train", "labels"],
            val_labels=arrays["val", "labels"],
            test_labels=arrays["test", "labels"],
            train_tokens=int(meta["train_tokens"]),
            classes=list(meta["classes"]),
            label_keys=list(meta["label_keys"]),
            source=str(meta["source"]),
        )
    except Exception:  # noqa: BLE001 - whatever is wrong with an entry, the answer is to rebuild it
        return None


def prepare_text(cfg, corpus: Corpus | None = None) -> PreparedText:
    """Read, subset, tokenize, build the vocabulary from the training split, and encode both splits.

    With `cfg.cache` (the default) and no `corpus` given, the result comes from the cache when an
    entry for the same source and settings exists, and is stored there otherwise.
    """
    if corpus is not None or not cfg.cache:
        return _build(cfg, corpus if corpus is not None else _read(cfg, None))
    sources = _sources(cfg)
    folder = hub.data_dir() / "cache" / f"text-{cache_key(cfg, sources)}"
    cached = _load(folder) if folder.is_dir() else None
    if cached is not None:
        return cached
    data = _build(cfg, _read(cfg, sources[0]))
    with contextlib.suppress(OSError):  # a read-only or full disk costs the cache, not the run
        _save(folder, data)
    return data


def _read(cfg, source: Path | None) -> Corpus:
    data = cfg.data if source is None else source
    return load_corpus(
        data,
        test_data=cfg.test_data,
        text_col=cfg.text_col,
        label_col=cfg.label_col,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        target=getattr(cfg, "target", "label"),
    )
