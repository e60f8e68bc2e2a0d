"""ResNet-18/34/50: torchvision's state_dict layout, its numbers, and checkpoints that round-trip.

torchvision cannot be installed here, so equivalence is checked two ways that do not need it: the
key names and shapes recorded from torchvision (`../shared/data/torchvision_resnet_state_dict_layout.json`),
and a forward pass written below from torchvision's documented architecture with nothing but
`torch.nn.functional`, reading the same state_dict.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sentiment.vision.resnet import RESNETS, WEIGHTS, Bottleneck, ResNet, resnet18

# (bottleneck blocks?, blocks per stage): torchvision's table, written out again independently.
ARCHITECTURES = {
    "resnet18": (False, (2, 2, 2, 2)),
    "resnet34": (False, (3, 4, 6, 3)),
    "resnet50": (True, (3, 4, 6, 3)),
}
LAYOUT_FILE = "data/torchvision_resnet_state_dict_layout.json"


@pytest.fixture(scope="module")
def torchvision_layout() -> dict:
    shared = os.environ.get("SENTIMENT_SHARED")
    root = Path(shared) if shared else Path(__file__).resolve().parents[2] / "shared"
    path = root / LAYOUT_FILE
    if not path.is_file():
        pytest.skip(f"torchvision's state_dict layout is not at {path}; set $SENTIMENT_SHARED to the shared folder")
    return json.loads(path.read_text())


def _build(name: str, seed: int = 0, **kwargs) -> ResNet:
    torch.manual_seed(seed)
    return RESNETS[name](**kwargs)


@functools.cache
def _shared_model(name: str) -> ResNet:
    """One 1000-class model per depth for the tests that only read it: building ResNet-50 takes 0.5 s."""
    return _build(name).eval()


# --- the layout official checkpoints need -----------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_state_dict_matches_torchvision_key_for_key(name, torchvision_layout):
    model = _shared_model(name)
    ours = [[key, list(t.shape)] for key, t in model.state_dict().items()]
    expected = torchvision_layout[name]["keys"]
    assert [k for k, _ in ours] == [k for k, _ in expected]  # names and order first: the clearer diff
    assert ours == expected
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == torchvision_layout[name]["parameters"] == WEIGHTS[name].num_params


def test_weights_records_describe_the_official_files():
    assert set(WEIGHTS) == set(RESNETS) == {"resnet18", "resnet34", "resnet50"}
    for name, weights in WEIGHTS.items():
        # torchvision's naming scheme: <arch>-<sha256 prefix>.pth, the last part of the URL.
        assert weights.url == f"https://download.pytorch.org/models/{weights.file_name}"
        assert weights.file_name == f"{name}-{weights.sha256_prefix}.pth"
        assert len(weights.sha256_prefix) == 8 and int(weights.sha256_prefix, 16) >= 0
        assert (weights.input_size, weights.resize_size) == (224, 256)
        assert weights.mean == (0.485, 0.456, 0.406) and weights.std == (0.229, 0.224, 0.225)
    assert [WEIGHTS[n].top1 for n in ("resnet18", "resnet34", "resnet50")] == [69.758, 73.314, 76.13]
    with pytest.raises(AttributeError):
        WEIGHTS["resnet18"].top1 = 100.0  # frozen: a record is shared by every caller


# --- the numbers: an independent functional forward -------------------------------------------------


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )


def _conv_bn(x, sd, conv: str, bn: str, stride: int = 1, padding: int = 0) -> torch.Tensor:
    return _bn(F.conv2d(x, sd[f"{conv}.weight"], stride=stride, padding=padding), sd, bn)


def reference_forward(
    sd: dict[str, torch.Tensor], bottleneck: bool, layers: tuple[int, ...], x: torch.Tensor
) -> torch.Tensor:
    """torchvision's ResNet forward in eval mode, from its documented architecture (ResNet v1.5)."""
    x = F.relu(_conv_bn(x, sd, "conv1", "bn1", stride=2, padding=3))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for stage, blocks in enumerate(layers, start=1):
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            stride = 2 if stage > 1 and i == 0 else 1
            if bottleneck:  # 1x1 -> 3x3 (carries the stride) -> 1x1
                out = F.relu(_conv_bn(x, sd, f"{p}.conv1", f"{p}.bn1"))
                out = F.relu(_conv_bn(out, sd, f"{p}.conv2", f"{p}.bn2", stride=stride, padding=1))
                out = _conv_bn(out, sd, f"{p}.conv3", f"{p}.bn3")
            else:  # 3x3 (carries the stride) -> 3x3
                out = F.relu(_conv_bn(x, sd, f"{p}.conv1", f"{p}.bn1", stride=stride, padding=1))
                out = _conv_bn(out, sd, f"{p}.conv2", f"{p}.bn2", padding=1)
            if f"{p}.downsample.0.weight" in sd:
                identity = _conv_bn(x, sd, f"{p}.downsample.0", f"{p}.downsample.1", stride=stride)
            else:
                identity = x
            x = F.relu(out + identity)
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def _randomize_batch_norms(model: nn.Module, images: torch.Tensor) -> None:
    """Give every BN non-trivial running statistics and affine parameters that keep activations O(1).

    The statistics come from one train-mode pass over random images (momentum None = plain average,
    so one batch sets them), then get jittered so they are not exactly the batch's.
    """
    g = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(images)
        for bn in bns:
            c = bn.num_features
            bn.running_mean += 0.1 * torch.randn(c, generator=g)
            bn.running_var *= torch.empty(c).uniform_(0.8, 1.25, generator=g)
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=g))
            bn.bias.copy_(0.2 * torch.randn(c, generator=g))
            bn.momentum = 0.1
    model.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_logits_equal_the_functional_reference(name):
    model = _build(name, num_classes=10)
    torch.manual_seed(2)
    _randomize_batch_norms(model, torch.randn(8, 3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    sd = model.state_dict()
    assert not torch.allclose(sd["bn1.running_var"], torch.ones(64))  # BN really is not the identity
    with torch.no_grad():
        ours = model(x)
        expected = reference_forward(sd, *ARCHITECTURES[name], x)
    assert ours.shape == (2, 10)
    assert expected.abs().max() > 0.1  # a meaningful comparison, not two near-zero tensors
    assert (ours - expected).abs().max().item() < 1e-4


# --- checkpoints, features, odd sizes ------------------------------------------------------------------


def test_state_dict_round_trips_through_a_file(tmp_path):
    source = _shared_model("resnet18")
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    target = _build("resnet18", seed=1).eval()
    assert not torch.equal(target.conv1.weight, source.conv1.weight)
    target.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048)])
def test_features_are_the_pooled_vector_the_classifier_reads(name, dim):
    model = _shared_model(name)
    assert model.feature_dim == dim and model.fc.in_features == dim
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (2, dim)
        torch.testing.assert_close(model.fc(features), model(x))


def test_odd_input_sizes_work():
    model = _shared_model("resnet18")
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 1000)
        assert model.features(torch.randn(2, 3, 33, 65)).shape == (2, 512)


# --- initialisation -----------------------------------------------------------------------------------


def test_torchvision_initialisation():
    model = _shared_model("resnet18")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    # kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (out_channels * k * k)).
    w = model.layer4[0].conv1.weight  # 512 x 256 x 3 x 3: enough samples for a tight estimate
    assert w.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.02)
    assert model.conv1.bias is None and model.layer1[0].downsample is None


def _blocks(model: ResNet) -> list[nn.Module]:
    return [block for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for block in layer]


def test_zero_init_residual_starts_every_block_as_identity_plus_relu():
    tiny = ResNet(Bottleneck, (1, 2, 1, 1), num_classes=4, zero_init_residual=True).eval()
    assert all(torch.count_nonzero(block.bn3.weight) == 0 for block in _blocks(tiny))
    assert all(torch.count_nonzero(block.bn2.weight) > 0 for block in _blocks(tiny))  # only the last BN
    x = F.relu(torch.randn(1, 64, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(tiny.layer2[1](x.repeat(1, 8, 1, 1)), x.repeat(1, 8, 1, 1))
    basic = resnet18(zero_init_residual=True)
    assert all(torch.count_nonzero(block.bn2.weight) == 0 for block in _blocks(basic))
    assert all(torch.count_nonzero(block.bn2.weight) > 0 for block in _blocks(_shared_model("resnet18")))
