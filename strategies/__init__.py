"""Search strategies for nni-covid3d (installed as ``nni_covid3d.strategies``).

``GumbelDNAS`` is an NNI one-shot strategy (single paths drawn from Gumbel-perturbed logits, compared by
their losses); ``get(name, **kwargs)`` builds it or one of NNI's one-shot strategies by name;
``planted`` holds search problems with known answers to judge any of them.
"""
import nni_covid3d._warnings  # noqa: F401  (filters NNI's import warnings)

from .gumbel_dnas import GumbelDNAS, GumbelDNASLightningModule, TemperatureSchedule
from .registry import STRATEGY_NAMES, get

__all__ = [
    "GumbelDNAS", "GumbelDNASLightningModule", "TemperatureSchedule", "STRATEGY_NAMES", "get",
]
