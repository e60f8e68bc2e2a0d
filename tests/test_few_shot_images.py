"""The image family's few-shot recipe: a head fitted on frozen features, kept near its ImageNet start."""

import json

import numpy as np
import pytest
import torch
from test_cli_image import make_photos

from cli_helpers import assert_user_error, run_cli
from sentiment import headfit
from sentiment.families.image import FEW_SHOT_MAX, ImageSettings
from sentiment.runs import Run

STRAWBERRY = 949  # ImageNet-1k row


def _blobs(n=40, dim=8, seed=0):
    """Two separable Gaussian classes, `n` examples each."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, dim, generator=g)
    y = torch.arange(2).repeat_interleave(n)
    x[:, 0] += 3 * (2 * y - 1)
    return x, y


def test_fit_moves_from_its_start_as_far_as_c_allows():
    x, y = _blobs()
    w0, b0 = torch.randn(2, 8), torch.randn(2)
    w_tight, b_tight = headfit.fit(x, y, w0, b0, 1e-6)
    assert torch.allclose(w_tight, w0, atol=1e-3) and torch.allclose(b_tight, b0, atol=1e-3)
    w_loose, b_loose = headfit.fit(x, y, w0, b0, 100.0)
    assert ((x @ w_loose.T + b_loose).argmax(1) == y).all()
    # the optimum: the gradient of the penalised loss is zero there
    w, b = w_loose.double().requires_grad_(), b_loose.double().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x.double() @ w.T + b, y, reduction="sum")
    loss = loss + ((w - w0.double()).square().sum() + (b - b0.double()).square().sum()) / 200
    loss.backward()
    assert w.grad.abs().max() < 1e-3 and b.grad.abs().max() < 1e-3


def test_folds_keep_a_photos_views_together_and_spread_classes():
    y = np.repeat([0, 1], 10).repeat(3)  # 20 photos, 3 views each
    groups = np.repeat(np.arange(20), 3)
    folds = headfit.stratified_folds(y, groups, 5, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(60))
    for fold in folds:
        assert all(set(np.flatnonzero(groups == g)) <= set(fold.tolist()) for g in np.unique(groups[fold]))
        assert np.bincount(y[fold], minlength=2).tolist() == [6, 6]


def test_choose_and_fit_takes_the_smallest_c_within_one_standard_error():
    x, y = _blobs(n=30)
    start = torch.zeros(2, 8), torch.zeros(2)
    fit = headfit.choose_and_fit(x, y, *start, grid=(1e-4, 1e-2, 1.0, 100.0))
    means = [fit.cv_accuracy[f"{c:g}"] for c in (1e-4, 1e-2, 1.0, 100.0)]
    best = max(means)
    first_good = next(c for c, m in zip((1e-4, 1e-2, 1.0, 100.0), means, strict=True) if m >= best - fit.cv_error)
    assert fit.c == first_good and fit.folds == 5
    assert ((x @ fit.weight.T + fit.bias).argmax(1) == y).float().mean() > 0.95
    # too few examples of a class to cross-validate: the grid's middle, no folds
    few = headfit.choose_and_fit(x[[0, 30]], y[[0, 30]], *start, grid=(0.1, 1.0, 10.0))
    assert few.folds == 0 and few.c == 1.0


@pytest.fixture(scope="module")
def fruit(tmp_path_factory):
    """Red photos filed as 'strawberry' (an ImageNet class) and blue ones as 'other'."""
    root = make_photos(tmp_path_factory.mktemp("fruit") / "fruit", n_train=6, n_test=4)
    for split in ("train", "test"):
        (root / split / "red").rename(root / split / "strawberry")
        (root / split / "blue").rename(root / split / "other")
    return root


def test_small_photo_sets_get_the_few_shot_recipe_by_themselves(fruit, tmp_path, capsys):
    code, out, err = run_cli(
        capsys, "image-finetune", "--data", fruit, "--backbone", "efficientnet-lite0", "--out", tmp_path / "runs",
        "--num-workers", "0", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    assert "head: other from every other ImageNet row (999); strawberry from ImageNet row 949 (strawberry)" in out
    assert "few-shot recipe: head fitted on the frozen backbone's features of 12 photos" in out
    run = Run(sorted((tmp_path / "runs").glob("2*"))[-1])
    config, summary = run.read_json("config.json"), run.read_json("summary.json")
    assert config["config"]["recipe"] == "few-shot" and config["config"]["head_init"] == "auto"
    assert config["config"]["freeze_backbone"] and summary["val_examples"] == 0 and summary["train_examples"] == 12
    assert summary["head_rows"]["strawberry"] == {"rows": "949", "count": 1, "names": ["strawberry"]}
    assert summary["head_rows"]["other"]["rows"] == "0-948+950-999" and summary["head_c"] in headfit.C_GRID
    assert summary["cv_folds"] == 5 and len(summary["cv_accuracy"]) == len(headfit.C_GRID)
    # the backbone is ImageNet's, untouched; only the head moved
    from sentiment.vision.backbones import build_model, get_backbone

    pretrained, _ = build_model(get_backbone("efficientnet-lite0"), 2, weights="imagenet")
    state = run.load_weights()
    body = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("_fc.")}
    assert all(torch.equal(state[k], v) for k, v in body.items())
    start, _ = _imagenet_row(STRAWBERRY)  # classes are sorted: other, strawberry
    moved = (state["_fc.weight"][1] - start).norm() / start.norm()
    assert 0 < moved < 1  # the fit moved the head, and kept it near its start
    # the run predicts like any image run
    photo = next((fruit / "test" / "strawberry").iterdir())
    code, out, err = run_cli(capsys, "image-predict", "--run", run.path, photo, "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["label"] in ("strawberry", "other")


def _imagenet_row(row: int):
    from sentiment.vision.backbones import get_backbone, imagenet_state_dict

    state = imagenet_state_dict(get_backbone("efficientnet-lite0"), "imagenet")
    return state["_fc.weight"][row], state["_fc.bias"][row]


def test_the_recipe_rule():
    settings = ImageSettings()
    assert settings.few_shot(FEW_SHOT_MAX) and not settings.few_shot(FEW_SHOT_MAX + 1)
    assert not ImageSettings(scratch=True).few_shot(10)
    assert not ImageSettings(epochs=3).few_shot(10)  # a schedule of one's own: the standard recipe
    assert not ImageSettings(lr=1e-3).few_shot(10) and not ImageSettings(recipe="standard").few_shot(10)
    assert ImageSettings(recipe="few-shot").few_shot(FEW_SHOT_MAX * 10)
    assert ImageSettings(freeze_backbone=True, head_init="imagenet:a=1").few_shot(10)


def test_few_shot_refuses_random_weights(fruit, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "image-finetune", "--data", fruit, "--recipe", "few-shot", "--scratch", "--out", tmp_path / "runs",
        "--num-workers", "0", "--quiet",
    )  # fmt: skip
    assert_user_error(code, err, "--recipe few-shot fits a head on pretrained features")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("2*"))
