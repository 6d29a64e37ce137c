"""Everything that talks to NNI's experiment manager (nnictl, the web UI).

* :mod:`~nni_covid3d.nnictl.reporter`: :class:`NniReporter`, the one Lightning callback that reports
  metrics to NNI (per validation, and a final result), used by every training and search path;
* :mod:`~nni_covid3d.nnictl.trial`: the trial entry point ``python -m nni_covid3d.trial MODE``
  that the configs in ``examples/nnictl`` run;
* :mod:`~nni_covid3d.nnictl.records`: reading a finished experiment back (trials, metrics, the best
  architecture) for ``nni-covid3d report`` / ``best-arch``;
* :mod:`~nni_covid3d.nnictl.run`: ``nni-covid3d nnictl-run``, one experiment from config to report.
"""
from nni_covid3d.nnictl.reporter import NniReporter, in_nni_trial

__all__ = ["NniReporter", "in_nni_trial"]
