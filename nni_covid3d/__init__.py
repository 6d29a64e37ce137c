"""nni-covid3d: neural architecture search for 3D CNNs that detect COVID-19 in chest CT volumes.

A plugin for Microsoft NNI 3.0: the CovidNet3D search space (``nni_covid3d.search_spaces``), a
single-path Gumbel-Softmax search strategy (``nni_covid3d.strategies``), dataset readers,
retraining, baselines and class activation maps.
"""
from nni_covid3d._version import __version__
from nni_covid3d import _warnings

_warnings.silence_known_nni_warnings()

__all__ = ["__version__"]
