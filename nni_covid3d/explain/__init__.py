"""Class activation maps for 3D CT classifiers: Grad-CAM, Grad-CAM++ and CAM (``monai.visualize``),
their NIfTI / PNG outputs, and scoring against lesion masks."""
from nni_covid3d.explain.cam import METHODS, CamExplainer, CamMap
from nni_covid3d.explain.layers import deepest_layer_with_depth, default_fc_layer, default_target_layer
from nni_covid3d.explain.scoring import energy_share, mask_fraction, pointing_game

__all__ = [
    "METHODS",
    "CamExplainer",
    "CamMap",
    "default_target_layer",
    "default_fc_layer",
    "deepest_layer_with_depth",
    "pointing_game",
    "energy_share",
    "mask_fraction",
    "score_cams",
    "write_cam_overlays",
]


def __getattr__(name: str):
    # the pipeline imports the data package; load it on first use only
    if name in ("score_cams", "write_cam_overlays"):
        from nni_covid3d.explain import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
