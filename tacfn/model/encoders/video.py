"""Video encoders: the paper's 3D ResNeXt-50 trunk and a thin 3D CNN for the ``lite`` preset.

Both take ImageNet-normalised face-crop clips (B, 3, T, H, W) and return a channels-first
feature grid (B, C, T', H', W') that the fusion blocks weigh position by position.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["LiteVideoEncoder", "ResNeXt3D"]


def _grid_shape(encoder: str, in_channels: int, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Check a per-sample video shape (C, T, H, W) and return its (T, H, W)."""
    if len(input_shape) != 4 or input_shape[0] != in_channels:
        raise ValueError(
            f"{encoder} takes a per-sample input of shape ({in_channels}, T, H, W), but got {tuple(input_shape)}"
        )
    return input_shape[1], input_shape[2], input_shape[3]


def _out_size(size: tuple[int, ...], layer: nn.Conv3d | nn.MaxPool3d) -> tuple[int, ...]:
    """(T, H, W) after a 3-D conv or pool (no dilation)."""
    kernel, stride, padding = (_triple(getattr(layer, a)) for a in ("kernel_size", "stride", "padding"))
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    return (value, value, value) if isinstance(value, int) else (value[0], value[1], value[2])


class ResNeXtBottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 grouped conv, 1x1x1 expand to twice the inner width; BN after each."""

    expansion = 2

    def __init__(self, in_channels: int, width: int, cardinality: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv3d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNeXt3D(nn.Module):
    """3D ResNeXt trunk (Hara et al., CVPR 2018) cut before its average pool.

    The defaults are the paper's ResNeXt-50 (32x4d): (B, 3, 30, 224, 224) ->
    (B, 2048, 2, 7, 7). Module names follow MSAF's state_dict keys (``conv1``, ``bn1``,
    ``layer1..4`` with ``conv1..3``, ``bn1..3``, ``downsample.0/1``), so its per-fold
    unimodal checkpoints load directly (see :mod:`tacfn.model.checkpoints`).

    Args:
        layers: bottlenecks per stage; stages after the first halve time and space.
        cardinality: groups of every 3x3x3 conv.
        base_width: inner width of the first stage's bottlenecks, doubled per stage; a
            bottleneck outputs twice its inner width.
        stem_width: output channels of the 7x7x7 stem conv.
        stem_relu: apply ReLU after the stem's BN. MSAF's fusion model, which TACFN's
            released code builds on, drops it; ``False`` reproduces that for its checkpoints.
    """

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        cardinality: int = 32,
        base_width: int = 128,
        stem_width: int = 64,
        in_channels: int = 3,
        stem_relu: bool = True,
    ) -> None:
        super().__init__()
        if not layers or min(layers) < 1:
            raise ValueError(f"`layers` must be a non-empty sequence of counts >= 1, but got {tuple(layers)}")
        if base_width % cardinality != 0:
            raise ValueError(
                f"`cardinality` must divide `base_width`, "
                f"but got (cardinality={cardinality}, base_width={base_width})"
            )
        self.in_channels = in_channels
        self.stem_relu = stem_relu
        self.conv1 = nn.Conv3d(in_channels, stem_width, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(stem_width)
        self.relu = nn.ReLU(inplace=True) if stem_relu else nn.Identity()
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        channels = stem_width
        for index, depth in enumerate(layers):
            width = base_width * 2**index
            blocks = [ResNeXtBottleneck(channels, width, cardinality, stride=1 if index == 0 else 2)]
            channels = width * ResNeXtBottleneck.expansion
            blocks += [ResNeXtBottleneck(channels, width, cardinality) for _ in range(depth - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.out_channels = channels
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stages(self) -> list[nn.Sequential]:
        """The residual stages ``layer1..layerN`` in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output (C, T', H', W') for a per-sample input (C, T, H, W)."""
        size = _out_size(_grid_shape(type(self).__name__, self.in_channels, input_shape), self.conv1)
        size = _out_size(size, self.maxpool)
        for stage in self.stages():
            block = stage[0]
            assert isinstance(block, ResNeXtBottleneck)
            size = _out_size(size, block.conv2)
        return (self.out_channels, *size)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]
) -> nn.Sequential:
    padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class LiteVideoEncoder(nn.Module):
    """A thin 3D CNN for the ``lite`` preset: (B, 3, 8, 64, 64) -> (B, width, 2, 4, 4).

    A 1x5x5 stem with spatial stride 4, two 3x3x3 convs with stride 2 in time and space
    and a 1x3x3 conv, each with BN and ReLU: about 0.1M parameters at ``width=64``. There
    is no global pooling, so the output keeps a 4x4 spatial grid: the left and right
    halves of the face crop land in different columns, which TACFN's spatial weights
    need to tell them apart.
    """

    def __init__(self, width: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if width < 4 or width % 4 != 0:
            raise ValueError(f"`width` must be a positive multiple of 4, but got width={width}")
        self.in_channels = in_channels
        self.out_channels = width
        self.stem = _conv_bn_relu(in_channels, width // 4, (1, 5, 5), (1, 4, 4))
        self.layer1 = _conv_bn_relu(width // 4, width // 2, (3, 3, 3), (2, 2, 2))
        self.layer2 = _conv_bn_relu(width // 2, width, (3, 3, 3), (2, 2, 2))
        self.layer3 = _conv_bn_relu(width, width, (1, 3, 3), (1, 1, 1))
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.layer3(self.layer2(self.layer1(self.stem(x))))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output (C, T', H', W') for a per-sample input (C, T, H, W)."""
        size: tuple[int, ...] = _grid_shape(type(self).__name__, self.in_channels, input_shape)
        for block in (self.stem, self.layer1, self.layer2, self.layer3):
            conv = block[0]
            assert isinstance(conv, nn.Conv3d)
            size = _out_size(size, conv)
        return (self.out_channels, *size)
