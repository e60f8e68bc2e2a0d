"""Image folders, archives, transforms and loaders, on small images made here (and the real
ants/bees archive when it is present)."""

from __future__ import annotations

import io
import math
import os
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sentiment.errors import SentimentError
from sentiment.vision import transforms as T
from sentiment.vision.folder import (
    ImageFolder,
    SkippedImagesWarning,
    find_split,
    load_image,
    make_loader,
    open_image_root,
)

RED, BLUE = (220, 30, 30), (30, 30, 220)


def photo(color, size=(40, 30), mode="RGB", seed=0) -> Image.Image:
    """A mostly-`color` image with some noise, converted to `mode`."""
    rng = np.random.default_rng(seed)
    w, h = size
    noise = rng.integers(-25, 26, size=(h, w, 3))
    img = Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8), "RGB")
    return img if mode == "RGB" else img.convert(mode)


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_split(folder: Path, per_class: int = 3) -> Path:
    """red/ and blue/ classes, mixed sizes, modes and formats."""
    sizes = [(40, 30), (25, 50), (64, 64), (33, 21)]
    for label, color in (("red", RED), ("blue", BLUE)):
        for i in range(per_class):
            img = photo(color, sizes[i % len(sizes)], seed=i)
            if i % 2:
                save(img, folder / label / f"{label}_{i}.png")
            else:
                save(img, folder / label / f"{label}_{i}.jpg", quality=90)
    return folder


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    root = tmp_path / "redblue"
    make_split(root / "train", per_class=5)
    make_split(root / "val", per_class=3)
    return root


# --------------------------------------------------------------------------- folders


def test_classes_are_sorted_subfolders_and_files_sorted_by_name(tmp_path):
    split = tmp_path / "train"
    for name in ("b.png", "a.JPG", "c.jpeg"):
        save(photo(RED), split / "zebra" / name, format="PNG" if name.endswith("png") else "JPEG")
    save(photo(BLUE), split / "apple" / "x.bmp")
    save(photo(BLUE), split / "apple" / "nested" / "y.webp")
    (split / "apple" / "notes.txt").write_text("not an image, and not an image extension: ignored")
    save(photo(BLUE), split / "apple" / ".hidden.png")  # dot-files (macOS ._x.jpg) are ignored
    (split / ".ipynb_checkpoints").mkdir()  # dot-folders are not classes

    ds = ImageFolder(tmp_path, "train")
    assert ds.classes == ["apple", "zebra"]
    assert ds.class_to_idx == {"apple": 0, "zebra": 1}
    assert [(p.relative_to(split).as_posix(), y) for p, y in ds.samples] == [
        ("apple/x.bmp", 0),
        ("apple/nested/y.webp", 0),
        ("zebra/a.JPG", 1),
        ("zebra/b.png", 1),
        ("zebra/c.jpeg", 1),
    ]
    assert ds.targets == [0, 0, 1, 1, 1]
    assert ds.skipped == []
    x, y = ds[2]
    assert x.shape == (3, 30, 40) and x.dtype == torch.float32 and y == 1


def test_a_split_can_take_the_training_classes(dataset_root, tmp_path):
    train = ImageFolder(dataset_root, "train")
    val = ImageFolder(dataset_root, "val", classes=train.classes)
    assert val.classes == train.classes == ["blue", "red"]
    save(photo(RED), dataset_root / "val" / "green" / "g.png")
    with pytest.raises(SentimentError, match=r"unexpected: \['green'\]"):
        ImageFolder(dataset_root, "val", classes=train.classes)


@pytest.mark.parametrize(
    "mode",
    ["RGB", "L", "P", "RGBA", "CMYK", "LA", "1", "I;16", "I", "F", "YCbCr", "P+transparency"],
)
def test_every_mode_becomes_rgb(mode):
    img = photo(RED, (20, 10))
    if mode == "P+transparency":
        img = img.convert("P")
        img.info["transparency"] = 0
    elif mode == "I;16":
        img = Image.fromarray(np.full((10, 20), 65535, dtype=np.uint16))
        assert img.mode == "I;16"
    else:
        img = img.convert(mode)
    x = T.to_tensor(img)
    assert x.shape == (3, 10, 20) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    if mode in ("RGB", "RGBA", "CMYK", "YCbCr"):  # colour survives: red channel dominates
        assert (x[0].mean() > x[2].mean() + 0.5).item()
    if mode == "I;16":  # 16-bit white is white, not clipped junk
        assert torch.equal(x, torch.ones_like(x))


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((1, 0), (0, 0, 255, 128))  # half-transparent blue
    x = T.to_tensor(img)
    assert torch.equal(x[:, 0, 0], torch.ones(3))
    assert torch.allclose(x[:, 0, 1], torch.tensor([127, 127, 255]) / 255, atol=2 / 255)
    assert torch.equal(x[:, 1, 3], torch.tensor([1.0, 0.0, 0.0]))


def test_files_of_every_mode_and_format_load_through_the_folder(tmp_path):
    split = tmp_path / "test"
    base = photo(BLUE, (30, 20))
    save(base.convert("L"), split / "a" / "grey.jpg")
    save(base.convert("CMYK"), split / "a" / "cmyk.jpg")
    save(base.convert("P"), split / "a" / "palette.png")
    save(base.convert("RGBA"), split / "a" / "alpha.png")
    save(base.convert("LA"), split / "a" / "grey_alpha.png")
    save(base.convert("P"), split / "a" / "anim.gif", transparency=0)
    save(Image.fromarray(np.full((20, 30), 1000, dtype=np.uint16)), split / "a" / "deep.png")
    save(base, split / "a" / "plain.tiff")
    ds = ImageFolder(tmp_path, "test")
    assert len(ds) == 8 and not ds.skipped
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 20, 30) and x.dtype == torch.float32 and y == 0
        assert 0.0 <= x.min() and x.max() <= 1.0
    cmyk = ds[[p.name for p, _ in ds.samples].index("cmyk.jpg")][0]
    assert cmyk[2].mean() > cmyk[0].mean() + 0.4  # still blue after CMYK -> RGB


def test_val_and_test_stand_in_for_each_other(tmp_path):
    make_split(tmp_path / "only_val" / "val", per_class=1)
    make_split(tmp_path / "only_test" / "test", per_class=1)
    assert find_split(tmp_path / "only_val", "test") == tmp_path / "only_val" / "val"
    assert find_split(tmp_path / "only_test", "val") == tmp_path / "only_test" / "test"
    assert ImageFolder(tmp_path / "only_val", "test").root.name == "val"
    make_split(tmp_path / "only_val" / "test", per_class=1)
    assert find_split(tmp_path / "only_val", "val").name == "val"  # the exact name wins


def test_missing_split_names_the_folder_and_what_is_there(dataset_root, tmp_path):
    with pytest.raises(SentimentError, match=r"no holdout folder in .*redblue \(its subfolders: train, val\)") as e:
        find_split(dataset_root, "holdout")
    assert "\n" not in str(e.value)
    (dataset_root / "val").rename(dataset_root / "other")
    with pytest.raises(SentimentError, match="no test or val or valid or validation folder") as e:
        ImageFolder(dataset_root, "test")
    assert "other, train" in str(e.value)
    with pytest.raises(SentimentError, match="no train folder"):
        find_split(tmp_path / "redblue" / "other", "train")
    with pytest.raises(SentimentError, match="image folder not found"):
        find_split(tmp_path / "nowhere", "train")


def test_empty_class_folder_is_an_error_naming_it(dataset_root):
    (dataset_root / "train" / "green").mkdir()
    (dataset_root / "train" / "green" / "readme.txt").write_text("no images here")
    with pytest.raises(SentimentError, match=r"class folder .*train/green has no images"):
        ImageFolder(dataset_root, "train")


def test_no_class_folders_is_an_error(tmp_path):
    (tmp_path / "train").mkdir()
    save(photo(RED), tmp_path / "train" / "loose.png")
    with pytest.raises(SentimentError, match="no class folders in"):
        ImageFolder(tmp_path, "train")


def test_unreadable_files_are_skipped_with_a_count(dataset_root):
    red = dataset_root / "train" / "red"
    (red / "fake.jpg").write_text("this is text, not a JPEG")
    (red / "cut.jpg").write_bytes(jpeg_bytes(photo(RED, (64, 48)))[:400])  # truncated
    with pytest.warns(SkippedImagesWarning, match=r"skipped 2 unreadable image files in .*train \(first: "):
        ds = ImageFolder(dataset_root, "train")
    assert len(ds) == 10
    assert sorted(p.name for p, _ in ds.skipped) == ["cut.jpg", "fake.jpg"]
    reasons = {p.name: r for p, r in ds.skipped}
    assert "UnidentifiedImageError" in reasons["fake.jpg"]
    assert "truncated" in reasons["cut.jpg"].lower()
    assert "cut.jpg" not in {p.name for p, _ in ds.samples}
    assert ds.skipped_message.startswith("skipped 2 unreadable image files")


def test_a_class_with_only_unreadable_files_is_an_error(tmp_path):
    make_split(tmp_path / "train", per_class=1)
    (tmp_path / "train" / "broken").mkdir()
    (tmp_path / "train" / "broken" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImagesWarning)
        with pytest.raises(SentimentError, match=r"broken has no readable images: all 1 failed to load \(first: "):
            ImageFolder(tmp_path, "train")


def test_without_verification_a_bad_file_fails_when_used(dataset_root):
    (dataset_root / "train" / "red" / "zz_fake.png").write_text("text")
    ds = ImageFolder(dataset_root, "train", verify=False)
    assert len(ds) == 11 and ds.skipped == []
    with pytest.raises(SentimentError, match=r"cannot read image .*zz_fake.png \(UnidentifiedImageError"):
        ds[len(ds) - 1]
    with pytest.raises(SentimentError, match="cannot read image"):
        load_image(dataset_root / "nope.png")


# --------------------------------------------------------------------------- transforms


def test_eval_transform_is_3x224x224_for_any_shape():
    t = T.eval_transform()
    for h, w in ((30, 40), (300, 200), (224, 224), (1000, 240)):
        out = t(torch.rand(3, h, w))
        assert out.shape == (3, 224, 224) and out.dtype == torch.float32


def test_center_crop_on_a_known_tensor():
    x = torch.arange(6 * 7, dtype=torch.float32).view(1, 6, 7)
    # Offsets are round((6-3)/2) = 2 and round((7-3)/2) = 2, as in torchvision.
    assert torch.equal(T.center_crop(x, 3), x[:, 2:5, 2:5])
    assert torch.equal(T.center_crop(x, (4, 5)), x[:, 1:5, 1:6])
    assert torch.equal(T.center_crop(x, (6, 7)), x)
    padded = T.center_crop(x, (8, 7))  # larger than the image: zero rows on both sides
    assert torch.equal(padded[:, 1:7], x) and padded[:, 0].abs().sum() == 0 and padded[:, 7].abs().sum() == 0


def test_resize_sets_the_shorter_side_and_keeps_the_aspect_ratio():
    assert T.resize(torch.rand(3, 100, 200), 50).shape == (3, 50, 100)
    assert T.resize(torch.rand(3, 300, 200), 50).shape == (3, 75, 50)
    assert T.resize(torch.rand(3, 100, 333), 50).shape == (3, 50, 166)  # longer side rounded down
    assert T.resize(torch.rand(3, 20, 30), 256).shape == (3, 256, 384)  # upscaling too
    assert T.resize(torch.rand(2, 3, 40, 20), (10, 12)).shape == (2, 3, 10, 12)  # batches, exact size
    flat = torch.full((3, 64, 48), 0.25)
    assert torch.allclose(T.resize(flat, 24), torch.full((3, 32, 24), 0.25))  # weights sum to one
    x = torch.rand(3, 24, 24)
    assert T.resize(x, 24) is x


def test_random_resized_crop_respects_scale_and_ratio():
    crop = T.RandomResizedCrop(32, scale=(0.2, 0.9), ratio=(0.5, 2.0))
    x = torch.rand(3, 120, 160)
    g = torch.Generator().manual_seed(0)
    areas, ratios = [], []
    for _ in range(500):
        top, left, h, w = crop.get_params(x, g)
        assert 0 <= top and top + h <= 120 and 0 <= left and left + w <= 160
        areas.append(h * w / (120 * 160))
        ratios.append(w / h)
    # Boxes are rounded to whole pixels, so allow a pixel's worth of slack on the bounds.
    assert 0.2 - 0.02 <= min(areas) and max(areas) <= 0.9 + 0.02
    assert 0.5 - 0.05 <= min(ratios) and max(ratios) <= 2.0 + 0.1
    assert max(areas) - min(areas) > 0.5 and max(ratios) / min(ratios) > 3  # it does explore the range
    assert crop(x, g).shape == (3, 32, 32)
    assert T.RandomResizedCrop((20, 30))(x).shape == (3, 20, 30)


def test_random_resized_crop_falls_back_to_a_central_box_within_the_ratio():
    # A 10x100 strip: no box of the whole area with ratio <= 4/3 fits, so all 10 tries fail.
    crop = T.RandomResizedCrop(8, scale=(1.0, 1.0))
    assert crop.get_params(torch.rand(3, 10, 100)) == (0, 43, 10, 13)  # w = round(10 * 4/3)
    assert crop.get_params(torch.rand(3, 100, 10)) == (43, 0, 13, 10)  # h = round(10 / (3/4))


def test_random_transforms_are_reproducible_from_a_seed():
    t = T.train_transform(size=16, color_jitter=0.4)
    x = torch.rand(3, 40, 50)
    a = t(x, generator=torch.Generator().manual_seed(7))
    b = t(x, generator=torch.Generator().manual_seed(7))
    c = t(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = t(x)
    torch.manual_seed(3)
    assert torch.equal(d, t(x))  # the global RNG works the same way


def test_horizontal_flip_probability():
    x = torch.rand(3, 5, 6)
    assert torch.equal(T.RandomHorizontalFlip(p=0.0)(x), x)
    assert torch.equal(T.RandomHorizontalFlip(p=1.0)(x), x.flip(-1))
    g = torch.Generator().manual_seed(0)
    flips = sum(not torch.equal(T.RandomHorizontalFlip()(x, g), x) for _ in range(400))
    assert 150 < flips < 250


def test_normalize_maths_and_the_efficientnet_lite_affine():
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(3, 2, 2)
    out = T.Normalize(T.IMAGENET_MEAN, T.IMAGENET_STD)(x)
    expected = [(v - m) / s for v, m, s in zip((0.0, 0.5, 1.0), T.IMAGENET_MEAN, T.IMAGENET_STD, strict=True)]
    assert torch.allclose(out[:, 0, 0], torch.tensor(expected))
    assert torch.equal(T.Normalize([0.5], [0.5])(x), x * 2 - 1)  # one value for every channel

    pixels = torch.randint(0, 256, (3, 16, 16)).float()
    lite = T.Normalize(T.EFFICIENTNET_LITE_MEAN, T.EFFICIENTNET_LITE_STD)(pixels / 255)
    assert torch.allclose(lite, (pixels - 127) / 128, atol=1e-6)  # (255 x - 127) / 128
    assert T.EFFICIENTNET_LITE_MEAN == (127 / 255,) * 3 and T.EFFICIENTNET_LITE_STD == (128 / 255,) * 3

    with pytest.raises(SentimentError, match="zero"):
        T.Normalize((0.5,), (0.0,))
    with pytest.raises(SentimentError, match="same length"):
        T.Normalize((0.5, 0.5), (0.5,))


def test_color_jitter_is_identity_at_zero_and_stays_in_range():
    x = torch.rand(3, 12, 12)
    assert torch.equal(T.ColorJitter()(x), x)
    strong = T.ColorJitter(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)
    g = torch.Generator().manual_seed(1)
    outs = [strong(x, g) for _ in range(30)]
    assert all(0.0 <= o.min() and o.max() <= 1.0 for o in outs)
    assert all(o.shape == x.shape for o in outs)
    assert len({o.sum().item() for o in outs}) == 30
    assert torch.allclose(T.ColorJitter(brightness=(0.5, 0.5))(x), x * 0.5)
    with pytest.raises(SentimentError, match="hue"):
        T.ColorJitter(hue=0.6)
    with pytest.raises(SentimentError, match="brightness"):
        T.ColorJitter(brightness=-1)


def test_colour_adjustments():
    x = torch.rand(3, 8, 8)
    assert torch.allclose(T.hsv_to_rgb(T.rgb_to_hsv(x)), x, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    assert torch.allclose(T.adjust_hue(red, 1 / 3), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1), atol=1e-5)
    assert torch.allclose(T.adjust_hue(red, -1 / 3), torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1), atol=1e-5)
    grey = T.adjust_saturation(x, 0.0)
    assert torch.allclose(grey[0], grey[1]) and torch.allclose(grey[1], grey[2])
    flat = T.adjust_contrast(x, 0.0)
    assert torch.allclose(flat, T.rgb_to_grayscale(x).mean().expand_as(x))
    assert torch.equal(T.adjust_brightness(x, 3.0).max(), torch.tensor(1.0))


def test_presets():
    t = T.train_transform(size=24, mean=(0.5,) * 3, std=(0.5,) * 3, color_jitter=0.4)
    kinds = [type(s).__name__ for s in t.transforms]
    assert kinds == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter", "Normalize"]
    assert t.transforms[2].hue == pytest.approx(0.1)
    assert [type(s).__name__ for s in T.train_transform().transforms][-1] == "Normalize"
    assert "ColorJitter" not in repr(T.train_transform(color_jitter=None))
    out = t(torch.rand(3, 50, 40))
    assert out.shape == (3, 24, 24) and -1.0 <= out.min() and out.max() <= 1.0
    assert [type(s).__name__ for s in T.eval_transform().transforms] == ["Resize", "CenterCrop", "Normalize"]


# --------------------------------------------------------------------------- archives


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def tree_members(root: Path) -> list[tuple[str, bytes]]:
    return [(p.relative_to(root.parent).as_posix(), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()]


def test_tar_archive_is_extracted_once_into_the_data_folder(dataset_root, tmp_path):
    archive = tmp_path / "redblue.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in tree_members(dataset_root):
            add_member(tar, name, data)
    root = open_image_root(archive)
    data = Path(os.environ["SENTIMENT_DATA_DIR"])
    assert root.name == "redblue" and root.parent.parent == data and root.parent.name.startswith("redblue-")
    assert sorted(os.listdir(data)) == [root.parent.name]  # no temporary folder left behind
    ds = ImageFolder(root, "val")
    assert ds.classes == ["blue", "red"] and len(ds) == 6
    marker = root / "train" / "marker"
    marker.write_text("x")
    assert open_image_root(archive) == root and marker.exists()  # not extracted again
    assert open_image_root(dataset_root) == dataset_root  # a folder is returned as is


def test_zip_archive_and_a_root_without_a_single_top_folder(dataset_root, tmp_path):
    archive = tmp_path / "flat.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in tree_members(dataset_root):
            zf.writestr(name.removeprefix("redblue/"), data)
        zf.writestr("__MACOSX/._train", b"resource fork")
    root = open_image_root(archive, cache_dir=tmp_path / "cache")
    assert root.parent == tmp_path / "cache" and sorted(p.name for p in root.iterdir()) == ["__MACOSX", "train", "val"]
    assert len(ImageFolder(root, "train")) == 10


@pytest.mark.parametrize(
    "member, kind, message",
    [
        ("../evil.txt", tarfile.REGTYPE, "contains '..'"),
        ("ok/../../evil.txt", tarfile.REGTYPE, "contains '..'"),
        ("ABSOLUTE", tarfile.REGTYPE, "has an absolute path"),
        ("ok/link", tarfile.SYMTYPE, "is a link"),
        ("ok/hard", tarfile.LNKTYPE, "is a link"),
        ("ok/dev", tarfile.CHRTYPE, "is a device"),
    ],
)
def test_unsafe_tar_members_are_refused_and_nothing_escapes(tmp_path, member, kind, message):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "evil.txt"
    if member == "ABSOLUTE":
        member = str(tmp_path / "abs_evil.txt")
        outside = tmp_path / "abs_evil.txt"
    archive = work / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        add_member(tar, "ok/train/a/x.txt", b"fine")
        add_member(tar, member, b"pwned", kind=kind, link=str(tmp_path / "evil.txt"))
    with pytest.raises(SentimentError, match=rf"refusing to extract .*bad.tar: member '.*' {message}"):
        open_image_root(archive, cache_dir=work / "cache")
    assert not outside.exists() and not (tmp_path / "evil.txt").exists()
    assert os.listdir(work / "cache") == []  # the partial extraction is gone too


def test_unsafe_zip_member_is_refused(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.txt", b"fine")
        zf.writestr("../evil.txt", b"pwned")
    with pytest.raises(SentimentError, match=r"member '../evil.txt' contains '..'"):
        open_image_root(archive, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil.txt").exists() and os.listdir(tmp_path / "cache") == []


def test_missing_corrupt_and_unknown_archives(tmp_path):
    with pytest.raises(SentimentError, match="image data not found: .*nowhere.tar"):
        open_image_root(tmp_path / "nowhere.tar")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SentimentError, match="neither a folder nor an archive"):
        open_image_root(tmp_path / "notes.txt")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip data")
    with pytest.raises(SentimentError, match=r"cannot extract .*broken.tar.gz"):
        open_image_root(tmp_path / "broken.tar.gz", cache_dir=tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


# --------------------------------------------------------------------------- loaders


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_yields_index_inputs_labels_and_every_index_once(dataset_root):
    ds = ImageFolder(dataset_root, "train", T.train_transform(size=16))
    loader = make_loader(ds, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3
    batches = epoch_batches(loader, 1)
    assert len(batches) == 3
    for index, inputs, labels in batches:
        assert isinstance(inputs, tuple) and len(inputs) == 1
        (images,) = inputs
        assert index.dtype == torch.long and labels.dtype == torch.long
        assert images.shape == (len(index), 3, 16, 16) and images.dtype == torch.float32
        assert labels.tolist() == [ds.targets[i] for i in index.tolist()]
    seen = torch.cat([b[0] for b in batches]).tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    dropped = make_loader(ds, batch_size=4, shuffle=False, seed=0, drop_last=True)
    assert len(dropped) == 2 and torch.cat([b[0] for b in dropped]).tolist() == list(range(8))
    with pytest.raises(SentimentError, match="batch size"):
        make_loader(ds, batch_size=0, shuffle=True, seed=0)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_loader_is_reproducible_per_seed_and_epoch(dataset_root):
    ds = ImageFolder(dataset_root, "train", T.train_transform(size=16, color_jitter=0.3))

    def run(seed, epoch, workers=0):
        loader = make_loader(ds, batch_size=4, shuffle=True, seed=seed, num_workers=workers)
        batches = epoch_batches(loader, epoch)
        return torch.cat([b[0] for b in batches]), torch.cat([b[1][0] for b in batches])

    order, images = run(seed=5, epoch=1)
    order2, images2 = run(seed=5, epoch=1)
    assert torch.equal(order, order2) and torch.equal(images, images2)
    order3, images3 = run(seed=5, epoch=2)
    assert not torch.equal(order, order3)
    # The same sample gets a different augmentation in another epoch.
    assert not torch.equal(images[order.argsort()], images3[order3.argsort()])
    # Workers do not change anything: each sample's randomness comes from (seed, epoch, index).
    order4, images4 = run(seed=5, epoch=1, workers=2)
    assert torch.equal(order, order4) and torch.equal(images, images4)
    assert not torch.equal(run(seed=6, epoch=1)[1], images)


def test_loader_over_a_plain_dataset_seeds_the_global_rng():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return torch.rand(3, 2, 2), i % 2

    loader = make_loader(Plain(), batch_size=3, shuffle=False, seed=1)
    first = torch.cat([b[1][0] for b in epoch_batches(loader, 1)])
    assert torch.equal(first, torch.cat([b[1][0] for b in epoch_batches(loader, 1)]))
    assert not torch.equal(first, torch.cat([b[1][0] for b in epoch_batches(loader, 2)]))


# --------------------------------------------------------------------------- the real ants/bees archive


def _hymenoptera() -> Path | None:
    """$SENTIMENT_HYMENOPTERA, else ../shared/data/hymenoptera_data.tar beside the repository."""
    env = os.environ.get("SENTIMENT_HYMENOPTERA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data.tar"
    return path if path.exists() else None


@pytest.mark.real_data
def test_real_ants_and_bees(tmp_path, monkeypatch):
    archive = _hymenoptera()
    if archive is None:
        pytest.skip("set SENTIMENT_HYMENOPTERA to hymenoptera_data.tar to run this test")
    monkeypatch.setenv("SENTIMENT_DATA_DIR", str(tmp_path / "data"))
    root = open_image_root(archive)
    assert root.name == "hymenoptera_data"
    train = ImageFolder(root, "train", T.eval_transform())
    val = ImageFolder(root, "test", T.eval_transform(), classes=train.classes)  # test -> val/
    assert train.classes == ["ants", "bees"] and val.root.name == "val"
    assert np.bincount(train.targets).tolist() == [124, 121]
    assert np.bincount(val.targets).tolist() == [70, 83]
    assert train.skipped == [] and val.skipped == []
    names = {p.name: i for i, (p, _) in enumerate(train.samples)}
    assert "ant photos.jpg" in names
    palette = []
    for i, (p, _) in enumerate(train.samples):
        with Image.open(p) as img:
            if img.mode == "P":
                palette.append(i)
    assert len(palette) == 1
    for i in (names["ant photos.jpg"], palette[0], 0, len(train) - 1):
        x, y = train[i]
        assert x.shape == (3, 224, 224) and math.isfinite(x.sum().item()) and y in (0, 1)
    index, (images,), labels = next(iter(make_loader(val, batch_size=8, shuffle=True, seed=0)))
    assert images.shape == (8, 3, 224, 224) and labels.tolist() == [val.targets[i] for i in index]


class _SeesParentState(torch.utils.data.Dataset):
    """Reports whether the worker that loads it inherited the training process's memory."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        import sentiment.vision.folder as folder

        return torch.tensor(float(hasattr(folder, "_set_in_the_parent_only"))), 0


def test_data_workers_do_not_inherit_the_training_process(monkeypatch):
    """Workers start from a small server process, not as forks of a process that may hold a model
    and its activations: state made in the parent after start-up is not in them."""
    import sentiment.vision.folder as folder

    monkeypatch.setattr(folder, "_set_in_the_parent_only", torch.zeros(1000), raising=False)
    in_process = make_loader(_SeesParentState(), batch_size=2, shuffle=False, seed=0, num_workers=0)
    assert torch.cat([b[1][0] for b in in_process]).tolist() == [1.0] * 4
    workers = make_loader(_SeesParentState(), batch_size=2, shuffle=False, seed=0, num_workers=2)
    assert torch.cat([b[1][0] for b in workers]).tolist() == [0.0] * 4


def test_data_workers_follow_the_cores_this_process_may_use(tmp_path, monkeypatch):
    from PIL import Image

    from sentiment.config import image_config
    from sentiment.families.image import ImageTask
    from sentiment.runtime import Runtime

    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (40, 40), (200, 10, 10) if name == "a" else (10, 10, 200)).save(
                tmp_path / split / name / "x.png"
            )
    cfg = image_config(None, {"data": str(tmp_path), "num_workers": 4, "backbone": "resnet18", "val_fraction": 0.0})
    for cores, expected in (({0}, 0), ({0, 1, 2}, 3), (set(range(16)), 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, c=cores: c, raising=False)
        data = ImageTask(cfg).data(Runtime(torch.device("cpu")), lambda _: None)
        assert data.train.num_workers == expected and data.test.num_workers == expected
