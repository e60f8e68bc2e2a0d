"""Readers for the Large Movie Review Dataset (IMDb): an extracted folder or a tar archive, read in place.

Accepted sources: an `aclImdb/` folder (or its parent), the official `aclImdb_v1.tar.gz`, and the
labeled-only `aclImdb_v1_labeled.tar.gz`. Reviews come back in a deterministic order (negative
before positive, then by numeric file id); shuffling is the caller's job.
"""

from __future__ import annotations

import os
import re
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from sentiment import hub
from sentiment.errors import SentimentError
from sentiment.text.examples import Example

SPLITS = ("train", "test")
LABELS = ("neg", "pos")  # folder names; label index 0 = neg, 1 = pos
CLASSES = ("negative", "positive")

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"

# aclImdb/<split>/<neg|pos>/<id>_<rating>.txt, possibly below a leading folder
_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(neg|pos)/(\d+)_(\d+)\.txt$")


def _sort_key(ex: Example) -> tuple[int, int]:
    return ex.label, int(ex.id)


def _text(split_path: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SentimentError(f"{split_path} is not UTF-8 text (byte {e.start}); the file is damaged") from None


def _iter_folder(root: Path, splits: Iterable[str]) -> Iterator[tuple[str, str, str, str, str]]:
    base = root / "aclImdb" if (root / "aclImdb").is_dir() else root
    for split in splits:
        for label_dir in LABELS:
            folder = base / split / label_dir
            if not folder.is_dir():
                raise SentimentError(
                    f"{base} has no {split}/{label_dir} folder; expected the aclImdb layout "
                    f"(train/pos, train/neg, test/pos, test/neg)"
                )
            for entry in os.scandir(folder):
                m = re.fullmatch(r"(\d+)_(\d+)\.txt", entry.name)
                if m and entry.is_file():
                    with open(entry.path, "rb") as f:
                        yield split, label_dir, m[1], m[2], _text(entry.path, f.read())


def _iter_tar(path: Path, splits: Iterable[str], read_to) -> Iterator[tuple[str, str, str, str, str]]:
    # Streaming mode ("r|*") reads the archive front to back once, without seeking and
    # without extracting anything to disk.
    wanted = set(splits)
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for n, member in enumerate(tar):
                if read_to is not None and n % 256 == 0:
                    read_to(raw.tell())
                if not member.isfile():
                    continue
                m = _MEMBER.search(member.name)
                if not m or m[1] not in wanted:
                    continue
                f = tar.extractfile(member)
                if f is None:
                    continue
                yield m[1], m[2], m[3], m[4], _text(f"{path}:{member.name}", f.read())
            if read_to is not None:
                read_to(raw.tell())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise SentimentError(
            f"{path} is not a readable tar archive ({type(e).__name__}: {e}); it may be truncated or "
            f"corrupt: download it again"
        ) from None


def iter_imdb(
    source: str | os.PathLike,
    splits: Iterable[str] = SPLITS,
    *,
    keep: Callable[[str], str] | None = None,
    read_to: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, Example]]:
    """(split, review) for every review of `splits`, in the order the source holds them (an archive is
    read front to back, once). Each review's `slot` counts the reviews before it; `keep(text)` is
    what it carries as its text (a streamed preparation keeps none) and `read_to(bytes)` hears how
    far into an archive reading has got."""
    path = Path(source)
    splits = list(splits)
    for split in splits:
        if split not in SPLITS:
            raise SentimentError(f"unknown IMDb split {split!r}; choose one of: {', '.join(SPLITS)}")
    if not path.exists():
        raise SentimentError(f"no IMDb data at {path}: give a path to aclImdb/ or aclImdb_v1.tar.gz")
    if path.is_file():
        _refuse_plain_text(path)
    reviews = _iter_folder(path, splits) if path.is_dir() else _iter_tar(path, splits, read_to)
    for slot, (split, label_dir, file_id, rating, text) in enumerate(reviews):
        text = text if keep is None else keep(text)
        yield split, Example(text=text, label=LABELS.index(label_dir), rating=int(rating), id=file_id, slot=slot)


def _refuse_plain_text(path: Path) -> None:
    """A text file given where an archive was expected (a CSV saved as .txt, say) gets an error that
    says so, rather than the damaged-archive one."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head or head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar":  # gzip, tar
        return
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return  # binary: the archive reader says what is wrong with it
    first = text.split("\n", 1)[0]
    looks = (
        "JSON Lines" if first.lstrip().startswith("{") else "TSV" if "\t" in first else "CSV" if "," in first else None
    )
    kind = f"looks like {looks}" if looks else "is plain text"
    raise SentimentError(
        f"{path} {kind}, not an IMDb archive: a labeled file must be named .csv, .tsv or .jsonl "
        f"(rename it), and IMDb is an aclImdb/ folder or its .tar.gz archive"
    )


def read_imdb_splits(
    source: str | os.PathLike,
    splits: Iterable[str] = SPLITS,
    *,
    keep: Callable[[str], str] | None = None,
    read_to: Callable[[int], None] | None = None,
) -> dict[str, list[Example]]:
    """Read several splits in one pass over the source (an archive is decompressed once); each
    split in the deterministic order (negative first, then by file id). `keep` and `read_to` as
    `iter_imdb` takes them."""
    splits = list(splits)
    out: dict[str, list[Example]] = {split: [] for split in splits}
    for split, ex in iter_imdb(source, splits, keep=keep, read_to=read_to):
        out[split].append(ex)
    path = Path(source)
    for split in splits:
        if not out[split]:
            raise SentimentError(f"{path} holds no reviews for the {split!r} split")
        out[split].sort(key=_sort_key)
    return out


def read_imdb(source: str | os.PathLike, split: str) -> list[Example]:
    """The reviews of one split: text, label (pos=1, neg=0), rating and file id."""
    return read_imdb_splits(source, [split])[split]


def find_imdb(data: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Where the IMDb data is: `data`, then $SENTIMENT_IMDB, then data/, then a download into data/."""
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise SentimentError(f"no data at {path}: check the path given with --data")
        return path
    env = os.environ.get("SENTIMENT_IMDB")
    if env:
        path = Path(env)
        if not path.exists():
            raise SentimentError(f"$SENTIMENT_IMDB points to {path}, which does not exist")
        return path
    root = hub.data_dir()
    for candidate in (root / "aclImdb", root / IMDB_ARCHIVE):
        if candidate.exists():
            return candidate
    if not download:
        raise SentimentError(f"no IMDb data in {root}; give --data or set $SENTIMENT_IMDB")
    return hub.download(IMDB_URL, root / IMDB_ARCHIVE, md5=IMDB_MD5, desc="IMDb reviews")
