"""Model spaces for nni-covid3d (installed as ``nni_covid3d.search_spaces``).

- :class:`CovidNet3DSpace`: the CovidNet3D search space (an NNI 3.0 ``ModelSpace``);
- :func:`export_architecture`, :func:`save_architecture`, :func:`load_architecture`,
  :func:`build_model`: fixed architectures as JSON files and plain PyTorch models;
- :func:`model_cost`: parameters, MB and FLOPs of a fixed model;
- :func:`hpo_search_space`, :func:`choices_from_hpo`: the space as an nnictl search space.
"""

from .architecture import (
    FORMAT_VERSION,
    ArchitectureError,
    build_model,
    choice_domains,
    choices_from_hpo,
    export_architecture,
    hpo_search_space,
    hpo_search_space_json,
    load_architecture,
    random_architecture,
    save_architecture,
    validate_architecture,
)
from .cost import ModelCost, model_cost
from .covidnet3d import (
    DOWNSAMPLING_CANDIDATES,
    PRESETS,
    CovidNet3DSpace,
    UnsupportedStrategyError,
    is_weighted_sum_strategy,
    validate_for_strategy,
)
from .ops import DEFAULT_CANDIDATES

__all__ = [
    "DEFAULT_CANDIDATES",
    "DOWNSAMPLING_CANDIDATES",
    "FORMAT_VERSION",
    "PRESETS",
    "ArchitectureError",
    "CovidNet3DSpace",
    "ModelCost",
    "UnsupportedStrategyError",
    "build_model",
    "choice_domains",
    "choices_from_hpo",
    "export_architecture",
    "hpo_search_space",
    "hpo_search_space_json",
    "is_weighted_sum_strategy",
    "load_architecture",
    "model_cost",
    "random_architecture",
    "save_architecture",
    "validate_architecture",
    "validate_for_strategy",
]
