"""Everything that talks to NNI's experiment manager (nnictl, the web UI).

* :mod:`~nni_covid3d.nnictl.reporter`: :class:`NniReporter`, the one Lightning callback that reports
  metrics to NNI (per validation, and a final result), used by every training and search path;
* :mod:`~nni_covid3d.nnictl.trial`: the trial entry point ``python -m nni_covid3d.trial MODE``
  that the configs in ``examples/nnictl`` run;
* :mod:`~nni_covid3d.nnictl.supervise`: under NNI, the trial trains in a child process that a
  small parent watches, so a training process killed by a signal ends the trial FAILED, with why;
* :mod:`~nni_covid3d.nnictl.records`: reading a finished experiment back (trials, metrics, the best
  architecture) for ``nni-covid3d report`` / ``best-arch``;
* :mod:`~nni_covid3d.nnictl.run`: ``nni-covid3d nnictl-run``, one experiment from config to report.

``NniReporter`` and ``in_nni_trial`` are imported on first use, so that importing this package (as
the trial's supervising parent does) loads neither torch nor NNI.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nni_covid3d.nnictl.reporter import NniReporter, in_nni_trial

__all__ = ["NniReporter", "in_nni_trial"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nni_covid3d.nnictl import reporter

        return getattr(reporter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
