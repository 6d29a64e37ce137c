"""GumbelDNAS: single-path one-shot NAS with Gumbel sampling for NNI 3.0.

Used exactly like ``nni.nas.strategy.DARTS``::

    NasExperiment(space, evaluator, GumbelDNAS(size_budget_mb=10.0)).run()

Every step runs single paths only (one candidate per label, shared by all modules carrying the label
and by all DDP ranks), so memory is one subnet's. Updates alternate: the logits on a held-out part
of the training data (architecture step: by default two paths drawn from ``softmax(alpha / tau)``
run forward and are compared by their losses, a score-function estimate), the weights on the rest
(weight step: every candidate in turn, so the candidates compared were trained alike). A warm-up
trains the weights alone. The export is the argmax of the logits.

Each of these choices was kept because the planted-problem suite (``strategies/planted.py``,
``benchmarks/bench_planted.py``) showed it finds the known best architecture more often.

Laid out as NNI lays out DARTS: the strategy (``strategy.py``), its Lightning module (``lightning.py``),
the settings both share (``settings.py``), the cost penalty (``cost.py``), the weight / architecture data split (``loaders.py``) and the
temperature schedule (``schedule.py``).
"""
from .lightning import GumbelDNASLightningModule
from .loaders import split_train_loader
from .schedule import TemperatureSchedule
from .settings import SearchSettings
from .strategy import GumbelDNAS

__all__ = ["GumbelDNAS", "GumbelDNASLightningModule", "SearchSettings", "TemperatureSchedule", "split_train_loader"]
