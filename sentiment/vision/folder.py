"""Folders of images, `root/<split>/<class>/<file>`, read with Pillow and batched for the training loop.

- `open_image_root(path)`: a folder as is, or an archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz,
  .zip) extracted safely and atomically into the data folder, once.
- `find_split(root, split)`: `root/<split>`; `test` and `val` stand in for each other.
- `ImageFolder(root, split, transform)`: classes are the sorted subfolder names; samples are the
  image files under each (extensions in `IMAGE_EXTENSIONS`, any case), in torchvision's order.
  Files and folders whose names start with "." (`.DS_Store`, macOS `._x.jpg`) are ignored.
- `make_loader(dataset, ...)`: batches `(index, (images,), labels)`, reproducible from a seed.

Unreadable images. With `verify=True` (the default) every file is decoded once when the folder is
read (JPEGs at 1/8 scale, which still reads every byte).
Files Pillow cannot identify, truncated files and files in modes that cannot be made RGB are
skipped: they are listed in `ImageFolder.skipped` as `(path, reason)` and reported in one
`SkippedImagesWarning` ("skipped 2 unreadable image files in ... (first: path: reason)"). A class
left with no readable image is a `SentimentError`. With `verify=False` nothing is decoded up front,
and a file that fails to load when it is used raises a `SentimentError` naming it.

Every mode is converted to RGB by `transforms.to_rgb` (alpha composited on white; see there).
"""

from __future__ import annotations

import contextlib
import hashlib
import lzma
import os
import shutil
import stat
import struct
import tarfile
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from sentiment import hub
from sentiment.errors import SentimentError
from sentiment.hub import data_dir
from sentiment.runtime import usable_cores
from sentiment.vision.transforms import to_rgb, to_tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
# Names an evaluation split goes by; asking for one finds any of them (the one asked for first).
EVAL_SPLITS = ("test", "val", "valid", "validation")
_SPLIT_NAMES = {"train", *EVAL_SPLITS}

# What Pillow raises on bad bytes: UnidentifiedImageError and truncation are OSErrors; some
# decoders raise SyntaxError, ValueError, EOFError or struct.error on malformed headers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


class SkippedImagesWarning(UserWarning):
    """Some image files could not be read and were left out of a dataset."""


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:200]}"


# --------------------------------------------------------------------------- reading images


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path`, decoded and converted to RGB; a `SentimentError` naming it if that fails."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except _DECODE_ERRORS as e:
        raise SentimentError(f"cannot read image {path} ({_reason(e)}); replace or remove the file") from None


def check_image(path: str | os.PathLike) -> str | None:
    """Why the image at `path` cannot be used, or None if it decodes and converts to RGB."""
    try:
        with Image.open(path) as img:
            # A reduced-size JPEG decode still entropy-decodes the whole file, so truncation is
            # caught, at a fraction of the cost of a full decode. Other formats ignore draft().
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
            img.load()
            to_rgb(img)
    except _DECODE_ERRORS as e:
        return _reason(e)
    return None


def _check_all(paths: Sequence[Path]) -> list[str | None]:
    workers = min(8, usable_cores())
    if workers <= 1 or len(paths) < 16:
        return [check_image(p) for p in paths]
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(check_image, paths))


# --------------------------------------------------------------------------- folders


def find_split(root: str | os.PathLike, split: str) -> Path:
    """The folder `root/<split>`. An evaluation split may be named test, val, valid or validation:
    asking for any of them finds whichever exists (the exact name first)."""
    root = Path(root)
    if not root.is_dir():
        raise SentimentError(
            f"image folder not found: {root}; give a folder with train/ and val/ (or test/) subfolders"
        )
    candidates = [split] + ([s for s in EVAL_SPLITS if s != split] if split in EVAL_SPLITS else [])
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    subfolders = sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    found = ", ".join(subfolders) if subfolders else "none"
    raise SentimentError(
        f"no {' or '.join(candidates)} folder in {root} (its subfolders: {found}); "
        f"put the images in {root / split}/<class>/"
    )


def list_images(class_dir: Path) -> list[Path]:
    """The image files in a folder and below it, in torchvision's order; names starting with "." left out."""
    files = []
    # sorted(os.walk(...)) is torchvision's order: folders by path, files by name.
    for dirpath, _, filenames in sorted(os.walk(class_dir, followlinks=True)):
        rel = Path(dirpath).relative_to(class_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(Path(dirpath) / name)
    return files


class ImageFolder(Dataset):
    """Images in `root/<split>/<class>/...` (or `root/<class>/...` when `split` is None).

    `classes` fixes the class list (e.g. the training split's, so that the evaluation split gets the
    same indices); the folder must then hold exactly those classes. `transform` is called as
    `transform(x, generator=g)` on the `[3, H, W]` float tensor (see `transforms`).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        transform: Callable[..., torch.Tensor] | None = None,
        *,
        classes: Sequence[str] | None = None,
        verify: bool = True,
    ):
        self.root = find_split(root, split) if split is not None else Path(root)
        if not self.root.is_dir():
            raise SentimentError(f"image folder not found: {self.root}; give a folder with one subfolder per class")
        self.transform = transform
        found = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        if not found:
            raise SentimentError(
                f"no class folders in {self.root}; put the images in {self.root}/<class name>/, one subfolder per class"
            )
        if classes is not None and set(found) != set(classes):
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise SentimentError(
                f"the classes in {self.root} do not match the expected {list(classes)} "
                f"(missing: {missing or 'none'}, unexpected: {extra or 'none'}); "
                "give every split the same class folders"
            )
        self.classes: list[str] = list(classes) if classes is not None else found
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

        per_class = []
        for name in self.classes:
            files = list_images(self.root / name)
            if not files:
                raise SentimentError(
                    f"class folder {self.root / name} has no images ({' '.join(IMAGE_EXTENSIONS)}); "
                    "add images to it or remove it"
                )
            per_class.append(files)

        all_files = [p for files in per_class for p in files]
        reasons = _check_all(all_files) if verify else [None] * len(all_files)
        bad = {p: r for p, r in zip(all_files, reasons, strict=True) if r is not None}
        self.skipped: list[tuple[Path, str]] = list(bad.items())
        self.samples: list[tuple[Path, int]] = []
        for label, (name, files) in enumerate(zip(self.classes, per_class, strict=True)):
            good = [p for p in files if p not in bad]
            if not good:
                first = files[0]
                raise SentimentError(
                    f"class folder {self.root / name} has no readable images: all {len(files)} failed to load "
                    f"(first: {first}: {bad[first]}); replace them or remove the folder"
                )
            self.samples.extend((p, label) for p in good)
        self.targets = [label for _, label in self.samples]
        if self.skipped:
            warnings.warn(self.skipped_message, SkippedImagesWarning, stacklevel=2)

    @property
    def skipped_message(self) -> str | None:
        """One line about the skipped files, or None if there were none."""
        if not self.skipped:
            return None
        n, (path, reason) = len(self.skipped), self.skipped[0]
        return f"skipped {n} unreadable image file{'s' if n > 1 else ''} in {self.root} (first: {path}: {reason})"

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, i: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Sample `i` as `(image, label)`, its random transforms drawn from `generator`."""
        path, label = self.samples[i]
        x = to_tensor(load_image(path))
        if self.transform is not None:
            x = self.transform(x, generator=generator)
        return x, label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.get(i)


# --------------------------------------------------------------------------- archives


def _archive_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in ARCHIVE_SUFFIXES if name.endswith(s)), None)


def _refuse(archive: Path, member: str, why: str) -> SentimentError:
    return SentimentError(
        f"refusing to extract {archive}: member {member!r} {why}; the archive is unsafe or damaged, "
        "get it from a trusted source or extract it by hand"
    )


def _safe_member(archive: Path, name: str) -> PurePosixPath:
    """The member's path relative to the extraction folder, or a refusal if it could leave it."""
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        raise _refuse(archive, name, "has an absolute path")
    if ".." in PurePosixPath(name).parts or ".." in PureWindowsPath(name).parts:
        raise _refuse(archive, name, "contains '..'")
    return PurePosixPath(name)


def _write_member(dest: Path, rel: PurePosixPath, src) -> None:
    out = dest / rel
    # No links are ever created, so a path without '..' cannot leave dest; check anyway.
    if not out.resolve().is_relative_to(dest.resolve()):
        raise SentimentError(f"refusing to write {out}: it is outside {dest}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        shutil.copyfileobj(src, f, 1 << 20)


def _extract_tar(archive: Path, dest: Path) -> None:
    # Streaming mode reads the archive once, front to back; each member is checked before it is written.
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            rel = _safe_member(archive, member.name)
            if member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                if rel.parts:
                    _write_member(dest, rel, tar.extractfile(member))
            else:
                kind = "link" if member.issym() or member.islnk() else "device or special file"
                raise _refuse(archive, member.name, f"is a {kind}, not a file or folder")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _safe_member(archive, info.filename)
            # Unix zips keep the file type in the high bits; many zips leave them 0 (a plain file).
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                kind = "link" if file_type == stat.S_IFLNK else "device or special file"
                raise _refuse(archive, info.filename, f"is a {kind}, not a file or folder")
            if info.is_dir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
            elif rel.parts:
                with zf.open(info) as src:
                    _write_member(dest, rel, src)


def _content_root(folder: Path) -> Path:
    """The archive's single top folder (like `hymenoptera_data/`) if it has one, else `folder`."""
    entries = [e for e in folder.iterdir() if not e.name.startswith(".") and e.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and entries[0].name.lower() not in _SPLIT_NAMES:
        return entries[0]
    return folder


def open_image_root(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding the splits: `path` itself if it is a folder; for an archive, the folder it
    was extracted to (under `cache_dir`, default `$SENTIMENT_DATA_DIR` or `data/`), extracting it
    the first time. The cache folder is named after the archive and a hash of its size and mtime,
    so a replaced archive is extracted afresh. Extraction goes to a temporary folder renamed into
    place when complete: an interrupted extraction leaves nothing that looks finished."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.exists():
        raise SentimentError(
            f"image data not found: {path}; give a folder with train/ and val/ (or test/) subfolders, "
            "or a .tar, .tar.gz, .tgz or .zip archive of one"
        )
    suffix = _archive_suffix(path)
    if suffix is None:
        raise SentimentError(
            f"{path} is neither a folder nor an archive (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, .zip); "
            "give the image folder or its archive"
        )
    st = path.stat()
    tag = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:8]
    cache = Path(cache_dir) if cache_dir is not None else data_dir()
    target = cache / f"{path.name[: -len(suffix)]}-{tag}"
    if not target.is_dir():
        _extract(path, suffix, cache, target)
    return _content_root(target)


def _extract(archive: Path, suffix: str, cache: Path, target: Path) -> None:
    tmp = cache / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        tmp.mkdir(parents=True)
        if suffix == ".zip":
            _extract_zip(archive, tmp)
        else:
            _extract_tar(archive, tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # else another process finished the same extraction first
                raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
        raise SentimentError(
            f"cannot extract {archive} into {cache} ({_reason(e)}); the archive may be corrupt (download it "
            "again) or the disk full (free some space or set SENTIMENT_DATA_DIR to another folder)"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)


# --------------------------------------------------------------------------- batches


def _mix(*values: int) -> int:
    """A well-spread 63-bit seed from small integers (seed, epoch, index)."""
    state = np.random.SeedSequence([v % (1 << 64) for v in values]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 ^ int(state[1])) & ((1 << 63) - 1)


class _Indexed(Dataset):
    """`(index, image, label)`; sample i of epoch e draws its augmentation from its own generator,
    seeded from (seed, e, i), so the result depends on neither worker count nor load order."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        sample_seed = _mix(self.seed, self.epoch, i)
        get = getattr(self.dataset, "get", None)
        if get is not None:
            x, y = get(i, generator=torch.Generator().manual_seed(sample_seed))
        else:  # a plain dataset whose transforms use the global RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                x, y = self.dataset[i]
        return i, x, y


def _collate(batch):
    index = torch.tensor([b[0] for b in batch], dtype=torch.long)
    shapes = {tuple(b[1].shape) for b in batch}
    if len(shapes) > 1:
        raise ValueError(
            f"images in a batch have different shapes {sorted(shapes)}; end the transform with a fixed-size crop"
        )
    images = torch.stack([b[1] for b in batch])
    labels = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return index, (images,), labels


class SeededLoader(DataLoader):
    """A DataLoader whose epoch `e` is a pure function of (seed, e): the shuffle order, the worker
    seeds and every sample's augmentation. Call `set_epoch(e)` before each epoch (the training loop
    does); without it every pass repeats the same epoch, like `DistributedSampler`."""

    def __init__(self, dataset: Dataset, *, seed: int, **kwargs):
        self.seed = seed
        self._order = torch.Generator()
        super().__init__(_Indexed(dataset, seed), generator=self._order, **kwargs)

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        # Workers are started afresh each epoch (no persistent_workers), so they see this too.
        self.dataset.epoch = epoch

    def __iter__(self):
        # This generator draws the shuffle order and the workers' base seed.
        self._order.manual_seed(_mix(self.seed, self.epoch, 1 << 40))
        return super().__iter__()


def _worker_context():
    """Data workers start from a small server process that has imported torch and this package, not
    as forks of the training process: a fork would start with the whole model and its activations
    mapped (the footprint counted once more per worker) and is unsafe once threads run."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "sentiment.vision.folder", "sentiment.vision.transforms"])
    return ctx


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
) -> SeededLoader:
    """Batches `(index, (images,), labels)` for the training loop: `index` is a LongTensor of dataset
    indices, `images` a float tensor `[B, 3, H, W]`, `labels` a LongTensor. `len()` is the number of
    batches. A dataset with a `get(i, generator)` method (like `ImageFolder`) gets a per-sample
    generator; any other `(image, label)` dataset runs with the global RNG seeded per sample."""
    if batch_size < 1:
        raise SentimentError(f"batch size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise SentimentError(f"number of data workers must be 0 or more, got {num_workers}")
    return SeededLoader(
        dataset,
        seed=seed,
        multiprocessing_context=_worker_context() if num_workers > 0 else None,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        collate_fn=_collate,
    )


HOTDOG_URL = "http://d2l-data.s3-accelerate.amazonaws.com/hotdog.zip"
HOTDOG_SHA1 = "fba480ffa8aa7e0febbb511d181409f899b9baa5"


def find_image_data(data: str | os.PathLike | None) -> Path:
    """`--data`, then $SENTIMENT_HOTDOG, then data/hotdog, then a download of the hot dog photos."""
    if data is not None:
        return open_image_root(data)
    env = os.environ.get("SENTIMENT_HOTDOG")
    if env:
        if not Path(env).exists():
            raise SentimentError(f"$SENTIMENT_HOTDOG points to {env}, which does not exist")
        return open_image_root(env)
    root = hub.data_dir()
    if (root / "hotdog").is_dir():
        return root / "hotdog"
    archive = hub.download(HOTDOG_URL, root / "hotdog.zip", sha1=HOTDOG_SHA1, desc="hot dog photos")
    return open_image_root(archive)
