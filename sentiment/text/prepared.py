"""Prepared text: a corpus read, subset, tokenized, turned into a vocabulary and ids, once.

Preparation streams: each text is tokenized as it is read and only its token ids are kept (on
disk, numbered in order of first sight), never the text or its token list, so memory does not grow
with the corpus. Once every source is read, the splits are drawn from the labels alone, the
vocabulary is counted over the training split's ids, and each split's ids are renumbered into the
vocabulary's, cut to `max_len`, and written straight into the arrays of the result.

The result is cached under `<data dir>/cache/`, keyed by the source's checksum and every setting
that shapes it (tokenizer, min_freq, max_len, subsets), as plain `.npy` arrays that later runs
memory-map. A second run with the same data and settings skips reading and tokenizing entirely; a
damaged cache entry is rebuilt, never trusted, and an entry is written whole or not at all.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentiment import hub
from sentiment.config import held_out_seed
from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_write_json
from sentiment.text import imdb
from sentiment.text.batching import Encoded
from sentiment.text.corpus import Corpus, balanced_subset, load_corpus, validation_split
from sentiment.text.examples import Example
from sentiment.text.labeled import is_labeled_file
from sentiment.text.tokenize import get_tokenizer
from sentiment.text.vocab import UNK_ID, Vocab

CACHE_FORMAT = 2  # 2: a validation split
SPLITS = ("train", "val", "test")
ARRAYS = ("ids", "offsets", "lengths", "labels")
BLOCK_TOKENS = 1 << 22  # token ids read back per block (16 MB)
IN_MEMORY_BYTES = 256 << 20  # a subset of a source up to this size is chosen from the texts in memory


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


# -- streamed preparation --------------------------------------------------------------------------


class _FirstSeen(dict):
    """Token -> provisional id, numbered in order of first sight from 1 (0 stands for no token)."""

    def __missing__(self, token: str) -> int:
        self[token] = n = len(self) + 1
        return n


class Tokens:
    """An encoder for `_Stream`: texts -> their tokens' provisional ids (one numbering for every
    source), flat, and each text's number of tokens; `words()` the token of each id."""

    def __init__(self, tokenize):
        self.tokenize, self.numbering = tokenize, _FirstSeen()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        number = self.numbering.__getitem__
        lists = [list(map(number, self.tokenize(text))) for text in texts]
        lengths = [len(ids) for ids in lists]
        return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=sum(lengths)), lengths

    def words(self) -> list[str]:
        words = [""] * (len(self.numbering) + 1)
        for token, i in self.numbering.items():
            words[i] = token
        return words


class _Store:
    """One source's texts as ids, in reading order: a flat int32 file plus each text's length.
    `keep(text)` is what the readers call for every text they read; `encode` (a `Tokens`, or any
    callable of the same form) turns a few hundred texts at a time into ids. Without an `encode`
    the store only counts the texts (a pass for the labels); with `wanted` (a mask over the texts)
    it encodes only those, and the others are empty."""

    PENDING = 256  # texts encoded together

    def __init__(self, path: Path, encode, wanted: np.ndarray | None = None):
        self.path, self.encode, self.wanted = path, encode, wanted
        self.file = open(path, "wb") if encode is not None else None  # noqa: SIM115 - closed by `close`
        self.pending: list[str] = []
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.counts = array("q")

    def keep(self, text: str) -> str:
        if self.file is None:
            self.counts.append(0)
            return ""
        wanted = self.wanted is None or self.wanted[len(self.counts) + len(self.pending)]
        self.pending.append(text if wanted else "")
        if len(self.pending) >= self.PENDING:
            self._encode()
        return ""

    def _encode(self) -> None:
        ids, lengths = self.encode(self.pending)
        self.pending = []
        self.counts.extend(lengths)
        self.buffer.append(ids)
        self.buffered += len(ids)
        if self.buffered >= BLOCK_TOKENS:
            self._flush()

    def _flush(self) -> None:
        for ids in self.buffer:
            np.asarray(ids, dtype=np.int32).tofile(self.file)
        self.buffer, self.buffered = [], 0

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            if self.pending:
                self._encode()
            self._flush()
            self.file.close()
        self.lengths = np.frombuffer(self.counts, dtype=np.int64)
        self.starts = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.starts[1:])

    def blocks(self):
        """`(first, end, ids)`: the texts `first..end-1` and their ids, a few million ids at a time."""
        with open(self.path, "rb") as f:
            first, n = 0, len(self.lengths)
            while first < n:
                end = int(np.searchsorted(self.starts, self.starts[first] + BLOCK_TOKENS, side="right")) - 1
                end = min(max(end, first + 1), n)
                count = int(self.starts[end] - self.starts[first])
                yield first, end, np.fromfile(f, dtype=np.int32, count=count)
                first = end


class _Stream:
    """What a preparation reads its sources with: a `_Store` per file read, one encoder for all
    (None: labels only), and a progress bar over the bytes of each file (on a terminal)."""

    def __init__(self, folder: Path, encode, wanted: list[np.ndarray] | None = None):
        self.folder, self.encode, self.wanted = folder, encode, wanted
        self.stores: list[_Store] = []
        self.bars: list = []

    def reading(self, path: Path) -> dict:
        wanted = self.wanted[len(self.stores)] if self.wanted is not None else None
        store = _Store(self.folder / f"tokens-{len(self.stores)}.bin", self.encode, wanted)
        self.stores.append(store)
        return {"keep": store.keep, "read_to": self._bar(path)}

    def store(self, examples: list[Example]) -> tuple[_Store, list[Example]]:
        """A store holding `examples`' texts (read into memory), and the examples as it numbers
        them (slot i the i-th, the text dropped)."""
        store = _Store(self.folder / f"tokens-{len(self.stores)}.bin", self.encode)
        self.stores.append(store)
        for ex in examples:
            store.keep(ex.text)
        return store, [dataclasses.replace(ex, text="", slot=i) for i, ex in enumerate(examples)]

    def _bar(self, path: Path):
        from sentiment.fsutil import byte_bar

        bar, move = byte_bar(path, f"reading {path.name}")
        if bar is not None:
            self.bars.append(bar)
        return move

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
        for store in self.stores:
            store.close()


def _counts(store: _Store, examples: list[Example], size: int) -> np.ndarray:
    """How often each provisional id occurs in `examples`' texts (all their tokens, uncut)."""
    chosen = np.zeros(len(store.lengths), dtype=bool)
    chosen[[ex.slot for ex in examples]] = True
    counts = np.zeros(size, dtype=np.int64)
    for first, end, ids in store.blocks():
        counts += np.bincount(ids[np.repeat(chosen[first:end], store.lengths[first:end])], minlength=size)
    return counts


def _ragged(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`, vectorised."""
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    begin = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=begin[1:])
    return np.repeat(starts - begin, lengths) + np.arange(total, dtype=np.int64)


def _write_split(
    folder: Path, split: str, store: _Store, examples: list[Example], table=None, max_len: int | None = None
) -> None:
    """`examples`' ids (renumbered by `table`, each cut to `max_len`, an empty text a single
    `<unk>`; without a table, as stored, whole, an empty text empty) into `<split>_ids.npy`, with
    offsets and lengths, in the examples' order."""
    slots = np.array([ex.slot for ex in examples], dtype=np.int64)
    taken = store.lengths[slots] if max_len is None else np.minimum(store.lengths[slots], max_len)
    lengths = np.maximum(taken, 1) if table is not None else taken
    offsets = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    np.save(folder / f"{split}_offsets.npy", offsets)
    np.save(folder / f"{split}_lengths.npy", lengths)
    position = np.full(len(store.lengths), -1, dtype=np.int64)
    position[slots] = np.arange(len(slots))
    with open(folder / f"{split}_ids.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.dtype(np.int32).str, "fortran_order": False, "shape": (int(lengths.sum()),)}
        )
        header = f.tell()
        f.truncate(header + 4 * int(lengths.sum()))  # zeros: UNK_ID, what an empty text is
        for first, end, ids in store.blocks():
            here = np.flatnonzero(position[first:end] >= 0) + first
            if not len(here):
                continue
            n = taken[position[here]]
            values = ids[_ragged(store.starts[here] - store.starts[first], n)]
            values = table[values] if table is not None else values
            dest = _ragged(offsets[position[here]], n)
            order = np.argsort(dest, kind="stable")
            dest, values = dest[order], values[order]
            breaks = np.flatnonzero(np.diff(dest) != 1) + 1  # one write per run of consecutive places
            for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(dest)], strict=True):
                os.pwrite(f.fileno(), values[a:b].tobytes(), header + 4 * int(dest[a]))


def _choose(cfg, corpus: Corpus, stream: _Stream | None) -> tuple[list[Example], list[Example], list[Example]]:
    """The training, validation and test examples: `--limit-train` / `--limit-test` (balanced,
    seeded), then the validation split (`--val-data` read for `stream`)."""
    k = len(corpus.classes)
    train = balanced_subset(corpus.train, cfg.limit_train, k, cfg.seed)
    train, val = validation_split(cfg, corpus, train, stream)
    return train, val, balanced_subset(corpus.test, cfg.limit_test, k, held_out_seed(cfg.seed))


def _split_stores(cfg, stores: list[_Store]) -> tuple[_Store, _Store, _Store]:
    """Which store each split's examples come from: the training source's, unless a separate test
    file (read second) or validation file (read last) holds them."""
    first = stores[0]
    test = stores[1] if cfg.test_data and is_labeled_file(_sources(cfg)[0]) else first
    return first, stores[-1] if cfg.val_data else first, test


def _source_bytes(cfg) -> int:
    total = 0
    for path in _sources(cfg):
        if path.is_file():
            total += path.stat().st_size
        else:
            total += sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())
    return total


def read_chosen(folder: Path, cfg, encode) -> tuple[_Stream, Corpus, tuple, tuple]:
    """Stream the sources into stores in `folder` (ids by `encode`) and choose the splits:
    `(stream, corpus, (train, val, test) examples, each split's store)`. With `--limit-train` /
    `--limit-test`, a first pass reads only the labels, so that the second encodes only the texts
    the subsets choose."""
    wanted = None
    if cfg.limit_train or cfg.limit_test:
        labels_only = _Stream(folder, None)
        try:
            chosen = _choose(cfg, _read(cfg, labels_only), labels_only)
        finally:
            labels_only.close()
        wanted = [np.zeros(len(store.lengths), dtype=bool) for store in labels_only.stores]
        for store, examples in zip(_split_stores(cfg, labels_only.stores), chosen, strict=True):
            wanted[labels_only.stores.index(store)][[ex.slot for ex in examples]] = True
    stream = _Stream(folder, encode, wanted)
    try:
        corpus = _read(cfg, stream)
        chosen = _choose(cfg, corpus, stream)
    finally:
        stream.close()
    return stream, corpus, chosen, _split_stores(cfg, stream.stores)


def _build_into(folder: Path, cfg, corpus: Corpus | None = None) -> None:
    """Read (or take `corpus`), subset, count the vocabulary and write every array of an entry
    into `folder`. A whole source streams (no text is held longer than it takes to tokenize it);
    a subset of a small one is read into memory and only the chosen texts are tokenized."""
    tokens = Tokens(get_tokenizer(cfg.tokenizer))
    if corpus is None and (cfg.limit_train or cfg.limit_test) and _source_bytes(cfg) <= IN_MEMORY_BYTES:
        corpus = _read(cfg, None)
    if corpus is None:
        stream, corpus, chosen, stores = read_chosen(folder, cfg, tokens)
    else:
        stream = _Stream(folder, tokens)
        try:
            stored = [stream.store(examples) for examples in _choose(cfg, corpus, None)]
        finally:
            stream.close()
        stores, chosen = tuple(s for s, _ in stored), tuple(x for _, x in stored)
    train, words = chosen[0], tokens.words()
    counts = _counts(stores[0], train, len(words))
    vocab = Vocab.build(Counter({words[i]: int(counts[i]) for i in np.flatnonzero(counts)}), min_freq=cfg.min_freq)
    stoi = vocab.stoi
    table = np.fromiter((stoi.get(w, UNK_ID) for w in words), dtype=np.int32, count=len(words))
    for split, store, examples in zip(SPLITS, stores, chosen, strict=True):
        _write_split(folder, split, store, examples, table, cfg.max_len)
        np.save(folder / f"{split}_labels.npy", np.ascontiguousarray(corpus.targets(examples)))
    for store in stream.stores:
        store.path.unlink(missing_ok=True)
    vocab.save(folder / "vocab.json")
    sizes = {
        f"{split}_{name}": [int(n) for n in np.load(folder / f"{split}_{name}.npy", mmap_mode="r").shape]
        for split in SPLITS
        for name in ARRAYS
    }
    atomic_write_json(
        folder / "meta.json",
        {
            "format": CACHE_FORMAT,
            "sizes": sizes,
            "train_tokens": int(counts.sum()),
            "classes": list(corpus.classes),
            "label_keys": list(corpus.label_keys),
            "source": corpus.source,
        },
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


def _build_entry(folder: Path, cfg) -> None:
    """Build the entry in a temporary folder beside it and rename it into place: readers see all or
    nothing, and a failure (a bad row, a full disk) leaves no part of it behind."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _build_into(tmp, cfg)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build_in_memory(cfg, corpus: Corpus | None = None) -> PreparedText:
    """A preparation outside the cache (`--no-cache`, a corpus given, or a cache that cannot be
    written): built in a temporary folder and read back into memory."""
    with tempfile.TemporaryDirectory(prefix="sentiment-prepare-") as tmp:
        try:
            _build_into(Path(tmp), cfg, corpus)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise SentimentError(f"no room to prepare the data in {tempfile.gettempdir()}: {e.strerror}") from None
        data = _load(Path(tmp), in_memory=True)
    if data is None:
        raise SentimentError("the prepared data could not be read back")
    return data


def _load(folder: Path, *, in_memory: bool = False) -> PreparedText | None:
    """The cached entry (memory-mapped; read whole with `in_memory`), or None if it is missing or
    damaged in any way."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        arrays = {}
        for split in SPLITS:
            for name in ARRAYS:
                arr = np.load(folder / f"{split}_{name}.npy", mmap_mode=None if in_memory else "r", allow_pickle=False)
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
    """Read, subset, tokenize, build the vocabulary from the training split, and encode every split.

    With `cfg.cache` (the default) and no `corpus` given, the result comes from the cache when an
    entry for the same source and settings exists, and is built there otherwise.
    """
    if corpus is not None or not cfg.cache:
        return _build_in_memory(cfg, corpus)
    folder = hub.data_dir() / "cache" / f"text-{cache_key(cfg, _sources(cfg))}"
    from sentiment import distributed

    if not distributed.active():
        return _cached(folder, cfg)
    # under torchrun: each machine's first process reads the sources into its cache while the others
    # wait, then every process maps that entry and reads its own share of the batches from it
    if distributed.local_rank() == 0:
        try:
            return _cached(folder, cfg)
        finally:
            distributed.barrier()
    distributed.barrier()
    data = _load(folder) if folder.is_dir() else None
    return data if data is not None else _build_in_memory(cfg)  # no entry: the first could not write one


def _cached(folder: Path, cfg) -> PreparedText:
    """The entry in `folder`, built there first if it is missing or damaged."""
    cached = _load(folder) if folder.is_dir() else None
    if cached is not None:
        return cached
    try:
        _build_entry(folder, cfg)
    except OSError:  # a read-only or full disk costs the cache, not the run
        return _build_in_memory(cfg)
    data = _load(folder)
    return data if data is not None else _build_in_memory(cfg)


def _read(cfg, stream: _Stream | None) -> Corpus:
    return load_corpus(
        cfg.data,
        test_data=cfg.test_data,
        text_col=cfg.text_col,
        label_col=cfg.label_col,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        target=getattr(cfg, "target", "label"),
        stream=stream,
    )
