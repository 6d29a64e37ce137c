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


def mc3_18(num_classes: int = 3, in_channels: int = 1) -> nn.Module:
    """torchvision's ``mc3_18`` (mixed 3D/2D convolutions) with its stem rebuilt for ``in_channels``.

    The video model reads (B, 3, T, H, W); a CT volume is (B, C, D, H, W) with depth in the time axis.
    """
    from torchvision.models.video import mc3_18 as tv_mc3_18

    model = tv_mc3_18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.stem[0] = nn.Conv3d(
            in_channels, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False
        )
        nn.init.kaiming_normal_(model.stem[0].weight, mode="fan_out", nonlinearity="relu")
    return model
