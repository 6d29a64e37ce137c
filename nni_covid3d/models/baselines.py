"""The baselines of the CovidNet3D paper: MONAI's 3D ResNet-101 and DenseNet-121, torchvision's MC3-18.

Every builder takes ``num_classes`` and ``in_channels`` and returns a plain ``torch.nn.Module`` mapping
``FloatTensor[B, in_channels, D, H, W]`` to logits ``FloatTensor[B, num_classes]``.
"""
from __future__ import annotations

from torch import nn


def resnet3d101(num_classes: int = 3, in_channels: int = 1) -> nn.Module:
    """MONAI ``resnet101`` in 3D (bottleneck blocks [3, 4, 23, 3]); 325.05 MB for 1 channel, 3 classes."""
    from monai.networks.nets import resnet101

    return resnet101(spatial_dims=3, n_input_channels=in_channels, num_classes=num_classes)


def densenet3d121(num_classes: int = 3, in_channels: int = 1) -> nn.Module:
    """MONAI ``DenseNet121`` in 3D; 42.90 MB for 1 channel, 3 classes.

    Needs at least 32 slices: its four stride-2 stages and the final pooling leave no depth below that.
    """
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=num_classes)


class VolumeStem(nn.Sequential):
    """torchvision's ``BasicStem`` of the video ResNets (conv 3x7x7, stride 1x2x2, BN, ReLU) for
    ``in_channels`` input channels instead of 3 RGB frames.

    Args:
        in_channels: channels of the input volume (1 for CT).
    """

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_channels, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
        )


def mc3_18(num_classes: int = 3, in_channels: int = 1) -> nn.Module:
    """torchvision's MC3-18 (3D convolutions in the first stage, 2D ones after) for CT volumes.

    Built the way torchvision builds its video ResNet variants (``VideoResNet`` with ``BasicBlock``,
    one ``Conv3DSimple`` and three ``Conv3DNoTemporal`` stages, [2, 2, 2, 2] blocks), with a
    :class:`VolumeStem` of ``in_channels``: the video model reads (B, 3, T, H, W); a CT volume is
    (B, C, D, H, W) with depth in the time axis. 43.84 MB for 1 channel, 3 classes.
    """
    from functools import partial

    from torchvision.models.video.resnet import BasicBlock, Conv3DNoTemporal, Conv3DSimple, VideoResNet

    return VideoResNet(BasicBlock, [Conv3DSimple] + [Conv3DNoTemporal] * 3, [2, 2, 2, 2],
                       stem=partial(VolumeStem, in_channels), num_classes=num_classes)
