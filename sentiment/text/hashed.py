"""Hashed TF-IDF features, for training sets too big for an exact n-gram vocabulary.

Each word and word sequence is hashed to one of `2**bits` columns (scikit-learn's
`HashingVectorizer`), so no vocabulary is ever held and memory does not grow with the corpus.
Reading streams as the prepared-text cache does (`sentiment.text.prepared`): each text's columns
are kept on disk as it is read, the splits are drawn from the labels alone and written out in
their order (the training rows shuffled once, by seed), and the document frequencies are counted
over the training split. A split is then read back a block of rows at a time as TF-IDF rows
(sublinear tf, smoothed idf, L2-normalised rows): the same transform `tfidf` that a trained run
applies to new texts.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from sentiment.text.prepared import SPLITS, _Stream, _write_split, read_chosen

BLOCK_ROWS = 4096  # rows per TF-IDF block


def vectorizer(ngrams: int, bits: int):
    """Counts of each text's 1- to `ngrams`-grams in `2**bits` hashed columns."""
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        n_features=1 << bits, ngram_range=(1, ngrams), alternate_sign=False, norm=None, dtype=np.float32
    )


def column_of(term: str, bits: int) -> int:
    """The column `vectorizer` counts `term` (a word or words joined by one space) in."""
    from sklearn.utils import murmurhash3_32

    h = int(murmurhash3_32(term, seed=0))
    n = 1 << bits
    return (2147483647 - (n - 1)) % n if h == -(1 << 31) else abs(h) % n


def tfidf(counts, idf: np.ndarray):
    """TF-IDF rows of n-gram counts: `1 + log(count)` times the column's idf, each row scaled to unit
    length (what `TfidfVectorizer(sublinear_tf=True)` does with its own vocabulary)."""
    from sklearn.preprocessing import normalize

    x = counts.tocsr().astype(np.float32, copy=True)
    np.log(x.data, out=x.data)
    x.data += 1
    x.data *= idf[x.indices]
    x.eliminate_zeros()
    return normalize(x, copy=False)


def idf_of(df: np.ndarray, n: int, min_df: int) -> np.ndarray:
    """Smoothed idf, `ln((1 + n) / (1 + df)) + 1`; 0 (the column unused) for columns seen in fewer
    than `min_df` of the `n` training texts."""
    idf = (np.log((1 + n) / (1 + df.astype(np.float64))) + 1).astype(np.float32)
    idf[df < min_df] = 0
    return idf


class HashedNgrams:
    """An encoder for the streamed readers: texts -> the column of every n-gram occurrence (each
    text's columns ascending, a column repeated once per occurrence) and each text's number of
    occurrences."""

    def __init__(self, ngrams: int, bits: int):
        self.vectorizer = vectorizer(ngrams, bits)

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        counts = self.vectorizer.transform(texts)
        repeats = counts.data.astype(np.int64)
        total = np.zeros(len(repeats) + 1, dtype=np.int64)
        np.cumsum(repeats, out=total[1:])
        lengths = total[counts.indptr[1:]] - total[counts.indptr[:-1]]
        return np.repeat(counts.indices, repeats).astype(np.int32), lengths


def _counts(ids: np.ndarray, lengths: np.ndarray, columns: int):
    """The count matrix of rows given as ascending, repeated columns (what `HashedNgrams` stores)."""
    from scipy.sparse import csr_matrix

    rows = np.repeat(np.arange(len(lengths)), lengths)
    new = np.ones(len(ids), dtype=bool)
    if len(ids):
        new[1:] = (ids[1:] != ids[:-1]) | (rows[1:] != rows[:-1])
    starts = np.flatnonzero(new)
    count = np.diff(np.r_[starts, len(ids)]).astype(np.float32)
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows[starts], minlength=len(lengths)), out=indptr[1:])
    return csr_matrix((count, ids[starts], indptr), shape=(len(lengths), columns))


class HashedSplits:
    """The training, validation and test rows of `cfg`'s data as hashed n-gram columns, on disk in a
    temporary folder until `close()`: `examples` and `labels` per split, the training split's
    `idf`, and `blocks(split)`, its TF-IDF rows a block at a time."""

    def __init__(self, cfg, bits: int):
        self.bits, self.columns = bits, 1 << bits
        self.folder = Path(tempfile.mkdtemp(prefix="sentiment-hashed-"))
        # `close()` removes the folder; failing that, garbage collection or the interpreter's exit does
        self.close = weakref.finalize(self, shutil.rmtree, self.folder, True)
        try:
            stream, corpus, chosen, stores = read_chosen(self.folder, cfg, HashedNgrams(cfg.ngrams, bits))
            train, val, test = chosen
            train = [train[i] for i in np.random.default_rng(cfg.seed).permutation(len(train))]
            self.examples = dict(zip(SPLITS, (train, val, test), strict=True))
            for split, store in zip(SPLITS, stores, strict=True):
                _write_split(self.folder, split, store, self.examples[split])
            _remove(stream)
            self.corpus = corpus
            self.labels = {split: corpus.targets(examples) for split, examples in self.examples.items()}
            self.offsets = {s: np.load(self.folder / f"{s}_offsets.npy") for s in SPLITS}
            self.lengths = {s: np.load(self.folder / f"{s}_lengths.npy") for s in SPLITS}
            self.header = {s: _header(self.folder / f"{s}_ids.npy") for s in SPLITS}
            df = np.zeros(self.columns, dtype=np.int64)
            for _, _, counts in self.count_blocks("train"):
                df += np.bincount(counts.indices, minlength=self.columns)
            self.df = df
            self.idf = idf_of(df, len(train), cfg.min_df)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.examples["train"])

    def count_blocks(self, split: str, order=None, rows: int = BLOCK_ROWS):
        """`(first, end, counts)` for the split's rows `first..end-1`, blocks in `order` (block
        numbers; default in turn)."""
        n = len(self.lengths[split])
        numbers = range(-(-n // rows)) if order is None else order
        with open(self.folder / f"{split}_ids.npy", "rb") as f:
            for b in numbers:
                first, end = b * rows, min(n, (b + 1) * rows)
                lengths = self.lengths[split][first:end]
                f.seek(self.header[split] + 4 * int(self.offsets[split][first]))
                ids = np.fromfile(f, dtype=np.int32, count=int(lengths.sum()))
                yield first, end, _counts(ids, lengths, self.columns)

    def blocks(self, split: str, order=None, rows: int = BLOCK_ROWS):
        """`(first, end, tfidf)`: as `count_blocks`, the rows as TF-IDF."""
        for first, end, counts in self.count_blocks(split, order, rows):
            yield first, end, tfidf(counts, self.idf)

    def block_count(self, split: str, rows: int = BLOCK_ROWS) -> int:
        return -(-len(self.lengths[split]) // rows)


def _header(path: Path) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def _remove(stream: _Stream) -> None:
    for store in stream.stores:
        store.path.unlink(missing_ok=True)
