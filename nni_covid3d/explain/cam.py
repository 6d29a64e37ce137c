"""Grad-CAM, Grad-CAM++, CAM and occlusion-sensitivity heatmaps for 3D classifiers, through ``monai.visualize``."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nni_covid3d.explain.layers import default_fc_layer, default_target_layer, feature_shape
from nni_covid3d.precision import DEFAULT_PRECISION, check_precision, inference_autocast

__all__ = ["METHODS", "OCCLUSION_BOX", "CamMap", "CamExplainer", "normalize_map"]

METHODS = ("gradcam", "gradcampp", "cam", "occlusion")

#: Occlusion box as fractions of the model input's (depth, height, width); chosen on the demo's
#: validation scans (benchmarks/RESULTS.md, *Class activation maps*).
OCCLUSION_BOX = (1 / 2, 1 / 8, 1 / 8)


def normalize_map(x: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map of a batch (N, 1, D, H, W) to [0, 1], larger = more relevant.

    (MONAI's default post-processing maps max to 0; this keeps the natural orientation.) A constant
    map becomes all zeros.
    """
    flat = x.reshape(x.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, *[1] * (x.dim() - 1))
    high = flat.max(dim=1).values.view(-1, *[1] * (x.dim() - 1))
    span = high - low
    return torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


def _softmax_over_classes(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(dim=1)


@dataclass
class CamMap:
    """A heatmap on the model's input grid and the prediction it explains."""

    heatmap: np.ndarray  # (D, H, W) float32 in [0, 1]
    class_idx: int  # the class the map explains
    probabilities: np.ndarray  # (num_classes,) softmax of the logits
    method: str
    layer: str
    feature_shape: tuple[int, ...] = field(default=())  # (D', H', W') of the target layer's output


class CamExplainer:
    """Heatmaps for one model, one method and one target layer.

    Args:
        model: a 3D classifier taking (N, C, D, H, W) and returning logits (N, K).
        input_shape: (C, D, H, W) of the model's input, used to find default layers.
        method: ``"gradcam"``, ``"gradcampp"``, ``"cam"`` (plain CAM, needs an ``nn.Linear`` head) or
            ``"occlusion"`` (MONAI's ``OcclusionSensitivity``: no layer, one forward pass per occluded
            box, about 700 at 16x64x64; the map is the drop of the class probability).
        target_layer: module name to read the feature map from; ``None`` picks the default for the
            model family (see :func:`~nni_covid3d.explain.layers.default_target_layer`), ``"auto"``
            the deepest layer that keeps depth >= ``min_depth`` for any model.
        fc_layer: for plain CAM, the linear layer; ``None`` finds it.
        occlusion_box: for occlusion, the box as fractions of the input's (depth, height, width);
            smaller boxes resolve thinner lesions and cost more forward passes.
        precision: the forward (and backward) passes' autocast
            (:func:`nni_covid3d.precision.inference_autocast`); the map and the probabilities are fp32.

    MONAI's hooks stay registered on ``model`` for the explainer's lifetime: make one explainer per
    model and reuse it.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        method: str = "gradcam",
        target_layer: str | None = None,
        fc_layer: str | None = None,
        min_depth: int = 4,
        occlusion_box: Sequence[float] = OCCLUSION_BOX,
        precision: str = DEFAULT_PRECISION,
    ) -> None:
        from monai.visualize import CAM, GradCAM, GradCAMpp, OcclusionSensitivity

        self.precision = check_precision(precision)  # the device's check comes with each call
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
        probe_shape = (1, *input_shape)
        self.model = model.eval()
        self.method = method
        if method == "occlusion":
            # Perturbation, no layer: a Gaussian-weighted box darkens each region in turn; the map is
            # the drop of the class probability.
            spatial = tuple(int(v) for v in input_shape[1:])
            if len(occlusion_box) != 3 or not all(0 < f <= 1 for f in occlusion_box):
                raise ValueError(f"occlusion_box must be 3 fractions in (0, 1], got {tuple(occlusion_box)}")
            mask_size = tuple(max(1, round(n * f)) for n, f in zip(spatial, occlusion_box))
            self.layer, self.feature_shape = "input", spatial
            # activate=True would pick sigmoid for 1-channel *inputs*: pass the softmax explicitly.
            self._occlusion = OcclusionSensitivity(model, mask_size=mask_size, n_batch=16, mode="gaussian",
                                                   overlap=0.5, activate=_softmax_over_classes, verbose=False)
            return
        if method == "cam":
            found_layer, found_fc = default_fc_layer(model, probe_shape)
            layer = found_layer if target_layer in (None, "auto") else target_layer
            fc_layer = fc_layer or found_fc
        elif target_layer == "auto":
            from nni_covid3d.explain.layers import deepest_layer_with_depth

            layer = deepest_layer_with_depth(model, probe_shape, min_depth)
        else:
            layer = target_layer or default_target_layer(model, probe_shape, min_depth)
        self.layer = layer
        self.feature_shape = tuple(feature_shape(model, layer, probe_shape)[2:])
        if method == "cam":
            self._cam = CAM(model, target_layers=layer, fc_layers=fc_layer, postprocessing=normalize_map)
        elif method == "gradcam":
            self._cam = GradCAM(model, target_layers=layer, postprocessing=normalize_map)
        else:
            self._cam = GradCAMpp(model, target_layers=layer, postprocessing=normalize_map)

    def __call__(self, image: torch.Tensor, class_idx: int | None = None) -> CamMap:
        """Explain one image (C, D, H, W); ``class_idx=None`` explains the predicted class."""
        if image.dim() != 4:
            raise ValueError(f"expected one image (C, D, H, W), got shape {tuple(image.shape)}")
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        # requires_grad so that backward hooks also fire on a first-layer target
        x = image.unsqueeze(0).to(device=device, dtype=torch.float32).requires_grad_(True)
        autocast = inference_autocast(self.precision, device.type)
        with torch.no_grad(), autocast:
            probabilities = _softmax_over_classes(self.model(x.detach()))[0]
        target = int(probabilities.argmax()) if class_idx is None else int(class_idx)
        if self.method == "occlusion":
            with torch.no_grad(), autocast, warnings.catch_warnings():
                # MONAI 1.x indexes with lists; torch's deprecation notice says nothing to a user.
                warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
                occluded, _ = self._occlusion(x.detach())
            heat = normalize_map((probabilities[target] - occluded[:, target : target + 1].float()).clamp(min=0))
        else:
            with torch.enable_grad(), autocast:
                heat = self._cam(x, class_idx=torch.tensor([target], device=device))
        return CamMap(
            heatmap=heat[0, 0].detach().float().cpu().numpy().astype(np.float32),
            class_idx=target,
            probabilities=probabilities.cpu().numpy(),
            method=self.method,
            layer=self.layer,
            feature_shape=self.feature_shape,
        )
