"""Train-time augmentation of a whole batch on the device it trains on (``--augment-on device``).

The same augmentation as the loader's MONAI transforms (``transforms.per_access_transforms``), with the
same distributions and MONAI's geometric conventions, but drawn per volume and applied to the whole
batch at once after it reached the GPU: one flip, one ``grid_sample`` and two elementwise operations
per batch instead of per-volume resampling in the loader's processes. In order, per volume:

1. left-right flip with probability ``flip_prob``;
2. with probability ``affine_prob``, one in-plane affine map for all slices (the slices act as
   channels, as in ``transforms.InPlaned``): rotation ``U(-r, r)``, a zoom ``1 + U(-s, s)`` per axis, a
   shift ``U(-t, t)`` of the height / width; bilinear, border padding. The matrix is MONAI's
   ``RandAffine`` matrix, rotate @ translate @ scale, in pixel coordinates about the centre;
3. with probability ``intensity_prob`` each: ``x * (1 + U(-f, f))``, then ``x + U(-o, o)``.

The random parameters are drawn on the CPU from a generator seeded by ``(seed, epoch, step, rank)``:
the paths an architecture step compares on one batch see the same augmented volumes, ranks differ,
and a resumed run draws what the uninterrupted run drew.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchAugmentation", "AffineParameters"]


@dataclass(frozen=True)
class AffineParameters:
    """Per-volume draws of one batch (CPU tensors of length ``B``)."""

    flip: Tensor  # bool: flip left-right
    affine: Tensor  # bool: apply the affine map
    angle: Tensor  # radians
    scale: Tensor  # [B, 2]: zoom of height, width
    shift: Tensor  # [B, 2]: shift of height, width in pixels
    intensity_factor: Tensor  # multiplied by (1 + factor) where drawn, else 0
    intensity_offset: Tensor  # added where drawn, else 0


@dataclass(frozen=True)
class BatchAugmentation:
    """``Preprocessing``'s train-time augmentation for a batch ``FloatTensor[B, C, D, H, W]`` on any device
    (:meth:`from_preprocessing` builds it from the same settings the loader's transforms read).

    Args:
        flip_prob: probability of a left-right flip.
        affine_prob: probability of the in-plane affine map.
        rotate_degrees: rotation range (+/-) in degrees.
        scale_range: zoom range (+/-) per in-plane axis.
        translate_fraction: shift range (+/-) as a fraction of the height / width.
        intensity_prob: probability of each intensity change.
        intensity_scale: multiplicative jitter range (+/-).
        intensity_shift: additive jitter range (+/-).
    """

    flip_prob: float
    affine_prob: float
    rotate_degrees: float
    scale_range: float
    translate_fraction: float
    intensity_prob: float
    intensity_scale: float
    intensity_shift: float

    @classmethod
    def from_preprocessing(cls, preprocessing: Mapping[str, Any] | None) -> BatchAugmentation | None:
        """The augmentation a ``Preprocessing.to_dict()`` asks to run on the device, else ``None``."""
        if not preprocessing or not preprocessing.get("augment", True) or preprocessing.get("augment_on") != "device":
            return None
        return cls(**{f.name: float(preprocessing[f.name]) for f in fields(cls)})

    @staticmethod
    def generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
        """The CPU generator of one training step's draws."""
        state = np.random.SeedSequence([seed, epoch, step, rank]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def draw(self, batch_size: int, height: int, width: int, generator: torch.Generator) -> AffineParameters:
        """Draw the parameters of ``batch_size`` volumes of ``height x width`` pixels."""
        def uniform(*shape: int, bound: float = 1.0) -> Tensor:
            return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound

        def happens(prob: float) -> Tensor:
            return torch.rand(batch_size, generator=generator, dtype=torch.float64) < prob

        flip = happens(self.flip_prob)
        affine = happens(self.affine_prob)
        angle = uniform(batch_size, bound=math.radians(self.rotate_degrees))
        scale = 1 + uniform(batch_size, 2, bound=self.scale_range)
        shift = uniform(batch_size, 2) * torch.tensor([self.translate_fraction * height, self.translate_fraction * width],
                                                      dtype=torch.float64)
        factor = torch.where(happens(self.intensity_prob), uniform(batch_size, bound=self.intensity_scale), 0.0)
        offset = torch.where(happens(self.intensity_prob), uniform(batch_size, bound=self.intensity_shift), 0.0)
        return AffineParameters(flip, affine, angle, scale, shift, factor, offset)

    @staticmethod
    def theta(params: AffineParameters, height: int, width: int) -> Tensor:
        """``DoubleTensor[B, 2, 3]`` for ``F.affine_grid`` (``align_corners=False``): MONAI's pixel-space map
        ``c_in = R S c_out + R t`` (coordinates (h, w) about the centre) in normalised (x=w, y=h) order.
        Volumes without the affine map get the identity."""
        cos, sin = params.angle.cos(), params.angle.sin()
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [B, 2, 2] in (h, w)
        linear = rotation * params.scale[:, None, :]  # R @ diag(scale)
        offset = (rotation @ params.shift[:, :, None])[..., 0]
        half = torch.tensor([height / 2, width / 2], dtype=torch.float64)
        linear = linear * half[None, None, :] / half[None, :, None]  # D^-1 (R S) D
        offset = offset / half
        identity = torch.eye(2, dtype=torch.float64).expand_as(linear)
        linear = torch.where(params.affine[:, None, None], linear, identity)
        offset = torch.where(params.affine[:, None], offset, 0.0)
        swap = [1, 0]  # (h, w) -> (x=w, y=h)
        return torch.cat([linear[:, swap][:, :, swap], offset[:, swap, None]], dim=2)

    def apply(self, images: Tensor, params: AffineParameters) -> Tensor:
        """Augment ``images`` ``FloatTensor[B, C, D, H, W]`` with ``params``; same shape, fp32."""
        b, c, d, h, w = images.shape
        # One host-to-device copy (pinned, asynchronous on a GPU): a blocking copy would wait for the GPU.
        packed = torch.cat([params.flip[:, None].double(), self.theta(params, h, w).double().reshape(b, 6),
                            1 + params.intensity_factor[:, None], params.intensity_offset[:, None]], dim=1).float()
        if images.is_cuda:
            packed = packed.pin_memory()
        packed = packed.to(images.device, non_blocking=True)
        flip, theta, factor, offset = packed[:, 0], packed[:, 1:7].reshape(b, 2, 3), packed[:, 7], packed[:, 8]
        with torch.autocast(images.device.type, enabled=False):
            x = images.float()
            x = torch.where(flip[:, None, None, None, None] > 0.5, x.flip(-1), x)
            if bool(params.affine.any()):  # decided on the CPU: no wait for the GPU
                grid = F.affine_grid(theta, [b, c * d, h, w], align_corners=False)
                x = F.grid_sample(x.reshape(b, c * d, h, w), grid, mode="bilinear", padding_mode="border",
                                  align_corners=False).reshape(b, c, d, h, w)
            return x * factor[:, None, None, None, None] + offset[:, None, None, None, None]

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Draw from ``generator`` and augment ``images`` ``FloatTensor[B, C, D, H, W]``."""
        b, _, _, h, w = images.shape
        return self.apply(images, self.draw(b, h, w, generator))
