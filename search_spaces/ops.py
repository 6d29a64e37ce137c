"""3D building blocks of the CovidNet3D space: MBConv, calibration conv, skip, conv-BN-ReLU6.

All blocks take and return ``[N, C, D, H, W]`` tensors. Candidate operations are named by strings
(``"mbconv_k3_e4"``: kernel 3, expansion 4; ``"skip"``), which is how they appear in architecture
files and nnictl search spaces.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "DEFAULT_CANDIDATES",
    "SKIP",
    "Calibration3d",
    "ConvBNReLU6",
    "MBConv3d",
    "Skip",
    "StridedCalibration3d",
    "make_candidate",
    "parse_candidate",
]

SKIP = "skip"

#: The paper's candidate set with one skip (its code listed Identity and Zero twice).
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "mbconv_k3_e3",
    "mbconv_k3_e4",
    "mbconv_k3_e6",
    "mbconv_k5_e3",
    "mbconv_k5_e4",
    "mbconv_k7_e3",
    "mbconv_k7_e4",
    SKIP,
)

_MBCONV_NAME = re.compile(r"^mbconv_k(\d+)_e(\d+)$")


def parse_candidate(name: str) -> tuple[int, int] | None:
    """``"mbconv_k5_e3"`` -> ``(5, 3)``; ``"skip"`` -> ``None``; anything else raises ``ValueError``."""
    if name == SKIP:
        return None
    match = _MBCONV_NAME.match(name)
    if match is None:
        raise ValueError(f"unknown candidate operation {name!r}: expected 'skip' or 'mbconv_k<kernel>_e<expansion>'")
    kernel, expansion = int(match.group(1)), int(match.group(2))
    if kernel % 2 == 0 or kernel < 1 or expansion < 1:
        raise ValueError(f"candidate operation {name!r}: kernel must be odd and >= 1, expansion >= 1")
    return kernel, expansion


class ConvBNReLU6(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU6, "same" padding. Used by the stem and the head."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__(
            OrderedDict(
                conv=nn.Conv3d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                bn=nn.BatchNorm3d(out_channels),
                act=nn.ReLU6(inplace=True),
            )
        )


class MBConv3d(nn.Module):
    """Inverted residual body (MobileNetV2 / ProxylessNAS) in 3D, without the residual itself.

    1x1x1 expansion (skipped when ``expand_ratio == 1``) -> k^3 depthwise -> 1x1x1 linear projection,
    each followed by BatchNorm3d; ReLU6 after the first two. ``[N, C_in, D, H, W] -> [N, C_out, D', H', W']``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, expand_ratio: int, stride: int = 1):
        super().__init__()
        self.kernel_size = kernel_size
        self.expand_ratio = expand_ratio
        hidden = in_channels * expand_ratio
        if expand_ratio == 1:
            self.expand = None
        else:
            self.expand = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv3d(in_channels, hidden, 1, bias=False),
                    bn=nn.BatchNorm3d(hidden),
                    act=nn.ReLU6(inplace=True),
                )
            )
        self.depthwise = nn.Sequential(
            OrderedDict(
                conv=nn.Conv3d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False),
                bn=nn.BatchNorm3d(hidden),
                act=nn.ReLU6(inplace=True),
            )
        )
        self.project = nn.Sequential(
            OrderedDict(
                conv=nn.Conv3d(hidden, out_channels, 1, bias=False),
                bn=nn.BatchNorm3d(out_channels),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.expand is not None:
            x = self.expand(x)
        return self.project(self.depthwise(x))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, expand_ratio={self.expand_ratio}"


class Skip(nn.Module):
    """The "no block" candidate: the cell's output becomes its calibration conv's output.

    In a cell with a residual connection (``out = y + op(y)``) that means ``op(y) = 0``; in a cell
    without one (``out = op(y)``) it means ``op(y) = y``. No parameters, no FLOPs.
    """

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) if self.residual else x

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


def make_candidate(name: str, channels: int, residual: bool) -> nn.Module:
    """The candidate operation ``name`` acting on ``channels`` channels, stride 1."""
    parsed = parse_candidate(name)
    if parsed is None:
        return Skip(residual)
    kernel, expansion = parsed
    return MBConv3d(channels, channels, kernel, expansion)


class Calibration3d(nn.Module):
    """1x1x1 Conv3d (with bias, as in the paper's code) that carries a cell's width change and stride."""

    def __init__(self, in_channels: int, out_channels: int, stride: int | Sequence[int] = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=_triple(stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class StridedCalibration3d(nn.Module):
    """A calibration conv applied with a given stride; candidates of one downsampling choice share the conv.

    Sharing means a single-path search trains one set of 1x1x1 weights whatever stride it samples.
    """

    def __init__(self, calibration: Calibration3d, stride: Sequence[int]):
        super().__init__()
        self.calibration = calibration
        self.stride = _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.calibration.conv
        return nn.functional.conv3d(x, conv.weight, conv.bias, stride=self.stride)

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"expected an int or three ints, got {value}")
    return value  # type: ignore[return-value]
