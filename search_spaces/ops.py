"""3D building blocks of the CovidNet3D space: MBConv, calibration conv, skip, conv-BN-ReLU6.

All blocks take and return ``[N, C, D, H, W]`` tensors. Candidate operations are named by strings
(``"mbconv_k3_e4"``: kernel 3, expansion 4; ``"skip"``), which is how they appear in architecture
files and nnictl search spaces.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from nni_covid3d.compat import will_engine_execute_node

__all__ = [
    "DEFAULT_CANDIDATES",
    "SKIP",
    "Calibration3d",
    "ConvBNReLU6",
    "DepthwiseConv3d",
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


def _engine_needs_gradient(ctx: Any, index: int) -> bool:
    """Whether this backward pass uses the gradient of the Function's input ``index``.

    ``ctx.needs_input_grad`` only says the input requires grad; a backward pass asked for other
    inputs (``torch.autograd.grad(loss, architecture_logits)``) never reads the weight gradient, and
    the autograd engine knows which nodes it will run (torch has no public API for it; see
    :mod:`nni_covid3d.compat`).
    """
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    return node is not None and will_engine_execute_node(node)


class _DepthwiseConv3dCPU(torch.autograd.Function):
    """Depthwise 3D convolution (stride 1, "same" padding) whose gradients are forward convolutions.

    PyTorch's CPU backward of grouped 3D convolutions (``slow_conv3d``) is one to two orders of
    magnitude slower than its forward; both gradients are correlations that the fast forward kernel
    computes just as well:

    - input: the same depthwise convolution of the output gradient with the flipped kernel;
    - weight: per channel, the padded input correlated with the output gradient, i.e. a grouped
      convolution with the batch as input channels and the gradient as a (D, H, W) kernel.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return nn.functional.conv3d(x, weight, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        p = ctx.padding
        channels = weight.shape[0]
        grad_out = grad_out.contiguous()
        # Under autocast (bf16-mixed) the forward ran in grad_out's dtype; each gradient returns in
        # its input's dtype (no-ops in fp32).
        dtype = grad_out.dtype
        grad_x = grad_w = None
        if _engine_needs_gradient(ctx, 0):
            grad_x = nn.functional.conv3d(grad_out, weight.to(dtype).flip(2, 3, 4), padding=p,
                                          groups=channels).to(x.dtype)
        if _engine_needs_gradient(ctx, 1):
            n, c, d, h, w = grad_out.shape
            padded = nn.functional.pad(x.to(dtype), (p,) * 6)
            grad_w = nn.functional.conv3d(
                padded.transpose(0, 1).reshape(1, c * n, *padded.shape[2:]),
                grad_out.transpose(0, 1).reshape(c, n, d, h, w),
                groups=c,
            ).reshape(weight.shape).to(weight.dtype)
        return grad_x, grad_w, None


class DepthwiseConv3d(nn.Conv3d):
    """Depthwise Conv3d, stride 1, "same" padding, no bias: ``[N, C, D, H, W] -> [N, C, D, H, W]``.

    A plain ``nn.Conv3d`` (same weights, same state dict) whose CPU training path uses
    :class:`_DepthwiseConv3dCPU` for a fast backward; elsewhere it is ``nn.Conv3d`` unchanged.
    """

    def __init__(self, channels: int, kernel_size: int):
        super().__init__(channels, channels, kernel_size, 1, kernel_size // 2, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _DepthwiseConv3dCPU.apply(x, self.weight, self.padding[0])
        return super().forward(x)


class MBConv3d(nn.Module):
    """Inverted residual body (MobileNetV2 / ProxylessNAS) in 3D, without the residual itself.

    1x1x1 expansion (skipped when ``expand_ratio == 1``) -> k^3 depthwise -> 1x1x1 linear projection,
    each followed by BatchNorm3d; ReLU6 after the first two. Stride 1 (in this space the calibration
    conv carries the stride). ``[N, C_in, D, H, W] -> [N, C_out, D, H, W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, expand_ratio: int):
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
                conv=DepthwiseConv3d(hidden, kernel_size),
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
