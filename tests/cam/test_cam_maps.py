"""Target-layer selection and CAM maps through monai.visualize."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_covid3d.explain.cam import CamExplainer, normalize_map
from nni_covid3d.explain.layers import (
    deepest_layer_with_depth,
    default_fc_layer,
    default_target_layer,
    probe_layers,
)
from tests.cam.conftest import blob_volume


def test_deepest_layer_keeping_depth(strided_net):
    # depth 16 -> stage1 8 -> stage2 4 -> stage3 2: stage2 is the deepest with depth >= 4
    assert deepest_layer_with_depth(strided_net, (1, 1, 16, 16, 16), min_depth=4) == "stage2"
    assert deepest_layer_with_depth(strided_net, (1, 1, 16, 16, 16), min_depth=2) == "stage3"
    # with 32 slices stage3 keeps 4
    assert deepest_layer_with_depth(strided_net, (1, 1, 32, 16, 16), min_depth=4) == "stage3"
    with pytest.raises(ValueError, match="depth >= 4"):
        deepest_layer_with_depth(strided_net, (1, 1, 4, 16, 16), min_depth=4)


def test_probe_is_post_order(strided_net):
    order = [info.name for info in probe_layers(strided_net, (1, 1, 16, 16, 16))]
    # a container finishes after its children
    assert order.index("stage1.0") < order.index("stage1.1") < order.index("stage1") < order.index("stage2.0")
    assert order[-1] == "head"


def test_searched_model_defaults(strided_net):
    from nni_covid3d.models import spec_of

    assert spec_of(strided_net) is None
    assert default_target_layer(strided_net, (1, 1, 16, 16, 16)) == "stage2"
    assert default_fc_layer(strided_net, (1, 1, 16, 16, 16)) == ("stage3", "head.2")


def test_baseline_family_defaults():
    from monai.networks.nets import DenseNet, resnet10
    from torchvision.models.video import mc3_18

    from nni_covid3d.models import spec_of

    torch.manual_seed(0)
    dense = DenseNet(spatial_dims=3, in_channels=1, out_channels=3, init_features=8, growth_rate=4, block_config=(1, 1))
    assert (spec_of(dense).name, default_target_layer(dense, (1, 1, 8, 16, 16))) == ("densenet3d121", "class_layers.relu")
    assert default_fc_layer(dense, (1, 1, 8, 16, 16)) == ("class_layers.relu", "class_layers.out")
    resnet = resnet10(spatial_dims=3, n_input_channels=1, num_classes=3)
    assert (spec_of(resnet).name, default_target_layer(resnet, (1, 1, 8, 16, 16))) == ("resnet3d101", "layer4")
    assert spec_of(mc3_18(num_classes=3)).name == "mc3_18"  # torchvision's own, as well as ours


def test_normalize_map_keeps_orientation():
    x = torch.tensor([0.0, 2.0, 4.0]).view(1, 1, 3, 1, 1)
    assert normalize_map(x).flatten().tolist() == [0.0, 0.5, 1.0]
    assert normalize_map(torch.full((1, 1, 2, 2, 2), 3.0)).abs().sum() == 0


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "cam"])
def test_cam_peaks_on_the_evidence(blob_net, method):
    image = blob_volume((2, 11, 4))
    explainer = CamExplainer(blob_net, (1, 8, 16, 16), method=method, target_layer="features")
    result = explainer(image)
    assert result.class_idx == 1  # the bright blob makes class 1 win
    assert result.heatmap.shape == (8, 16, 16)
    assert result.heatmap.max() == pytest.approx(1.0) and result.heatmap.min() >= 0.0
    peak = np.unravel_index(result.heatmap.argmax(), result.heatmap.shape)
    assert image[0][peak] == 1.0  # the maximum lies on the blob
    assert result.feature_shape == (8, 16, 16)
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)


def test_cam_explains_a_requested_class(blob_net):
    image = blob_volume((4, 4, 4))
    explainer = CamExplainer(blob_net, (1, 8, 16, 16), method="gradcam", target_layer="features")
    # class 0 is scored against the blob: Grad-CAM (ReLU of negative evidence) is empty
    result = explainer(image, class_idx=0)
    assert result.class_idx == 0
    assert result.heatmap.max() == 0.0


def test_unknown_method_or_layer(blob_net):
    with pytest.raises(ValueError, match="unknown CAM method"):
        CamExplainer(blob_net, (1, 8, 16, 16), method="saliency")
    with pytest.raises(KeyError, match="nope"):
        CamExplainer(blob_net, (1, 8, 16, 16), target_layer="nope")


def test_occlusion_box_is_a_fraction_of_the_input(blob_net):
    default = CamExplainer(blob_net, (1, 16, 64, 64), method="occlusion")
    assert tuple(default._occlusion.mask_size) == (8, 8, 8)
    finer = CamExplainer(blob_net, (1, 16, 64, 64), method="occlusion", occlusion_box=(0.25, 0.25, 0.125))
    assert tuple(finer._occlusion.mask_size) == (4, 16, 8)
    with pytest.raises(ValueError, match="occlusion_box"):
        CamExplainer(blob_net, (1, 16, 64, 64), method="occlusion", occlusion_box=(0.5, 0, 0.125))
