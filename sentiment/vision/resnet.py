"""ResNet-18/34/50 (He et al., 2015), laid out so torchvision's ImageNet checkpoints load unchanged.

Every module name and registration order matches torchvision's `models/resnet.py`, so
`model.load_state_dict(torch.load("resnet18-f37072fd.pth", weights_only=True))` works with
`strict=True`. torchvision itself cannot be installed next to a CPU-only torch, hence this file.

    stem:    conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2          [B, 64, H/4, W/4]
    layer1:  blocks at  64 planes, stride 1                        [B,  64 * e, H/4,  W/4]
    layer2:  blocks at 128 planes, the first one strides 2         [B, 128 * e, H/8,  W/8]
    layer3:  blocks at 256 planes, the first one strides 2         [B, 256 * e, H/16, W/16]
    layer4:  blocks at 512 planes, the first one strides 2         [B, 512 * e, H/32, W/32]
    head:    avgpool to 1x1 -> flatten -> fc                      [B, num_classes]

`e` is the block's expansion: 1 for `BasicBlock` (ResNet-18/34), 4 for `Bottleneck` (ResNet-50).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from sentiment.vision.transforms import IMAGENET_MEAN, IMAGENET_STD


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by a BatchNorm whose shift makes a bias redundant.
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def batch_norm(planes: int) -> nn.BatchNorm2d:
    # torchvision's values, spelled out: the checkpoints' running statistics were gathered with them.
    return nn.BatchNorm2d(planes, eps=1e-5, momentum=0.1)


def shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """The projection a block adds to its input when the output's shape differs; None when it does not."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), batch_norm(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual connection: x -> relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        # Registration order is state_dict order; it follows torchvision's.
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = batch_norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = batch_norm(planes)
        self.downsample = shortcut(in_planes, planes * self.expansion, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), plus a residual connection.

    The stride sits on the 3x3 conv, as in torchvision's "ResNet v1.5" (the original paper put it
    on the first 1x1); the official checkpoints were trained this way.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = batch_norm(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_planes, out_planes, stride)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


def stage(block: Block, in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` blocks at `planes`; only the first one changes the resolution or the width."""
    out_planes = planes * block.expansion
    first = block(in_planes, planes, stride)
    rest = [block(out_planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(first, *rest)


class ResNet(nn.Module):
    """A stem, four stages of residual blocks, global average pooling and a linear classifier.

    `features(x)` gives the pooled `[B, feature_dim]` vector the classifier `fc` reads; fine-tuning
    on a new task replaces `fc` (or builds the model with another `num_classes`) and keeps the rest.
    Any H and W work: the average pool adapts to whatever size the last stage leaves (32x smaller).
    """

    def __init__(self, block: Block, layers: Sequence[int], num_classes: int = 1000, zero_init_residual: bool = False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"a ResNet has 4 stages, got layers={list(layers)}")
        self.feature_dim = 512 * block.expansion

        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = batch_norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = stage(block, 64, 64, layers[0], stride=1)
        self.layer2 = stage(block, 64 * block.expansion, 128, layers[1], stride=2)
        self.layer3 = stage(block, 128 * block.expansion, 256, layers[2], stride=2)
        self.layer4 = stage(block, 256 * block.expansion, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.feature_dim, num_classes)

        self.reset_parameters(zero_init_residual)

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """torchvision's initialisation; `fc` keeps PyTorch's default for `nn.Linear`.

        With `zero_init_residual`, each block's last BN starts at zero, so every block starts as the
        identity; Goyal et al. (2017) report +0.2-0.3% top-1 from it when training from scratch.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images `[B, 3, H, W]` (normalised like the weights expect) -> pooled features `[B, feature_dim]`."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images `[B, 3, H, W]` -> logits `[B, num_classes]`."""
        return self.fc(self.features(x))


# ---------------------------------------------------------------------------------------------------
# Official ImageNet weights and the builders they belong to.


@dataclass(frozen=True)
class ResNetWeights:
    """Where a torchvision checkpoint lives, how to check it, and how its inputs must be prepared.

    torchvision names each file `<arch>-<first 8 hex digits of its sha256>.pth`: `sha256_prefix` is
    what a download can be checked against. Preprocessing: resize the short side to `resize_size`,
    centre-crop `input_size`, scale to [0, 1], normalise with `mean`/`std` (RGB order). `top1` is
    the ImageNet-1k validation accuracy (%) torchvision reports at that preprocessing.
    """

    url: str
    sha256_prefix: str
    file_name: str
    num_params: int
    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    categories_source: str = "imagenet-1k"
    top1: float = field(kw_only=True)  # required, and named: a bare number in a record is easy to misread


RESNET18_WEIGHTS = ResNetWeights(
    url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
    sha256_prefix="f37072fd",
    file_name="resnet18-f37072fd.pth",
    num_params=11_689_512,
    top1=69.758,
)


def resnet18(num_classes: int = 1000, *, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18: BasicBlocks (2, 2, 2, 2), 512-d features. ImageNet weights: `RESNET18_WEIGHTS`."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, zero_init_residual)


RESNET34_WEIGHTS = ResNetWeights(
    url="https://download.pytorch.org/models/resnet34-b627a593.pth",
    sha256_prefix="b627a593",
    file_name="resnet34-b627a593.pth",
    num_params=21_797_672,
    top1=73.314,
)


def resnet34(num_classes: int = 1000, *, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34: BasicBlocks (3, 4, 6, 3), 512-d features. ImageNet weights: `RESNET34_WEIGHTS`."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, zero_init_residual)


# torchvision's IMAGENET1K_V1 weights for ResNet-50 (its V2 recipe reaches 80.858 with other preprocessing).
RESNET50_WEIGHTS = ResNetWeights(
    url="https://download.pytorch.org/models/resnet50-0676ba61.pth",
    sha256_prefix="0676ba61",
    file_name="resnet50-0676ba61.pth",
    num_params=25_557_032,
    top1=76.13,
)


def resnet50(num_classes: int = 1000, *, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50: Bottlenecks (3, 4, 6, 3), 2048-d features. ImageNet weights: `RESNET50_WEIGHTS`."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, zero_init_residual)


RESNETS: dict[str, Callable[..., ResNet]] = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
WEIGHTS: dict[str, ResNetWeights] = {
    "resnet18": RESNET18_WEIGHTS,
    "resnet34": RESNET34_WEIGHTS,
    "resnet50": RESNET50_WEIGHTS,
}
