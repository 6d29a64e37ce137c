"""The one module that touches internals of NNI, Lightning and torch, and NNI's files on disk.

The rest of nni-covid3d uses public API only (``tests/test_compat.py`` checks the sources for it).
What could not be done publicly is here, each with why it is needed; ``tests/test_compat.py``
checks that every one still exists as used, and fails naming what changed and where to look when
an upgrade moves or changes one. Checked against the versions in :data:`CHECKED_AGAINST`; the
pins in ``setup.py`` must equal :data:`PINS`, so changing a pin brings you back here.

1. ``DartsLightningModule`` (``nni/nas/oneshot/pytorch/differentiable.py``): the base class of
   GumbelDNAS's Lightning module. ``nni.nas.oneshot.pytorch`` exports it, but NNI 3.0's API
   reference does not document it (only its base class, ``BaseOneShotLightningModule``). Reused
   from it: the constructor's ``arc_learning_rate``, ``gradient_clip_val`` and ``warmup_epochs``,
   the logits frozen during warm-up (``on_train_epoch_start``) and the logits kept out of the
   weight optimizer (``postprocess_weight_optimizers``).
2. ``torch._C._will_engine_execute_node`` (:func:`will_engine_execute_node`): whether the running
   backward pass needs a given gradient. The fast CPU depthwise convolution
   (``search_spaces/ops.py``) skips its weight gradient when only the architecture logits are
   asked for (``torch.autograd.grad``); ``ctx.needs_input_grad`` cannot tell. Without it the
   gradient is computed anyway (slower, same result).
3. NNI's experiment records (:func:`read_experiment_db`, :func:`registered_log_dir`): ``report``
   and ``best-arch`` read a finished experiment without starting an NNI manager. The manager's
   SQLite database ``<experiment dir>/db/nni.sqlite`` (schema: ``nni_node/core/sqlDatabase.js``)
   and nnictl's registry ``~/nni-experiments/.experiment`` (``nni/tools/nnictl/config_utils.py``,
   ``Experiments``) are NNI's storage, not an API. The public way, ``nni.experiment.Experiment.view``,
   starts a manager and a web server.
4. ``nni.trial.overwrite_intermediate_seq`` (:func:`continue_intermediate_sequence`): a trial that
   resumes its search continues the sequence numbers of its intermediate results, so that no epoch
   is reported twice under one number. Undocumented, and not in ``nni.trial.__all__``.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

__all__ = [
    "CHECKED_AGAINST",
    "PINS",
    "DB_COLUMNS",
    "EXPERIMENT_DB",
    "EXPERIMENT_REGISTRY",
    "NNI_HOME",
    "DartsLightningModule",
    "ExperimentTables",
    "continue_intermediate_sequence",
    "installed_versions",
    "read_experiment_db",
    "registered_log_dir",
    "will_engine_execute_node",
]

#: The versions every internal below was last checked against (``importlib.metadata`` names).
CHECKED_AGAINST: dict[str, str] = {"nni": "3.0", "pytorch-lightning": "2.6.6", "torch": "2.14.1"}

#: The version specifiers ``setup.py`` must pin these packages to.
PINS: dict[str, str] = {"nni": "==3.0", "pytorch-lightning": ">=2.0,<2.7", "torch": "==2.14.1"}


def installed_versions() -> dict[str, str | None]:
    """Installed versions of the packages in :data:`CHECKED_AGAINST` (``None`` if not installed)."""
    versions: dict[str, str | None] = {}
    for name in CHECKED_AGAINST:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ------------------------------------------------------------------------- 1. NNI's DARTS module
def __getattr__(name: str) -> Any:
    """``DartsLightningModule``, imported on first use (NNI takes seconds to import)."""
    if name == "DartsLightningModule":
        # NNI's strategy package must be imported before its one-shot modules, or it breaks.
        import nni.nas.strategy  # noqa: F401
        from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule

        return DartsLightningModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------- 2. torch's autograd engine
def will_engine_execute_node(node: Any) -> bool:
    """Whether the backward pass now running will execute autograd ``node`` (``True`` when unknown).

    Call it inside an ``autograd.Function.backward`` with a node from ``ctx.next_functions``.
    """
    import torch

    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):  # gone, or not inside a backward pass: compute the gradient
        return True


# ----------------------------------------------------------------- 3. NNI's experiment records
#: nnictl's home folder: the default experiment working directory and the registry's place.
NNI_HOME = Path("~/nni-experiments")
#: nnictl's registry of experiments: JSON ``{id: {"logDir": working directory, ...}}``.
EXPERIMENT_REGISTRY = NNI_HOME / ".experiment"
#: The manager's database, relative to ``<working directory>/<experiment id>``.
EXPERIMENT_DB = Path("db") / "nni.sqlite"

#: The tables and columns :func:`read_experiment_db` reads.
DB_COLUMNS: dict[str, tuple[str, ...]] = {
    "ExperimentProfile": ("params", "id", "revision"),
    "TrialJobEvent": ("trialJobId", "event", "data", "logPath", "sequenceId", "timestamp"),
    "MetricData": ("trialJobId", "parameterId", "type", "data", "timestamp"),
}


@dataclass(frozen=True)
class ExperimentTables:
    """What an experiment's database holds, in the order the manager wrote it.

    ``profile``: the experiment config (JSON text) of its latest revision, or ``None``.
    ``events``: ``(trial id, event, data JSON or None, log path or None, sequence id or None)``.
    ``metrics``: ``(trial id, parameter id or None, type, data)``; ``type`` is ``FINAL`` or
    ``PERIODICAL`` and ``data`` the reported value, JSON-encoded twice.
    """

    profile: str | None
    events: list[tuple[str, str, str | None, str | None, int | None]]
    metrics: list[tuple[str, str | None, str, str]]


def read_experiment_db(db: Path, experiment_id: str) -> ExperimentTables:
    """Read the experiment database ``db`` (read-only; a running manager may be writing it)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        profile = connection.execute(
            "SELECT params FROM ExperimentProfile WHERE id = ? ORDER BY revision DESC LIMIT 1", (experiment_id,)
        ).fetchone() or connection.execute(
            "SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1").fetchone()
        events = connection.execute(
            "SELECT trialJobId, event, data, logPath, sequenceId FROM TrialJobEvent ORDER BY timestamp, rowid"
        ).fetchall()
        metrics = connection.execute(
            "SELECT trialJobId, parameterId, type, data FROM MetricData ORDER BY timestamp, rowid").fetchall()
    finally:
        connection.close()
    return ExperimentTables(profile[0] if profile else None, events, metrics)


def registered_log_dir(experiment_id: str) -> Path | None:
    """The working directory nnictl registered for ``experiment_id``, if the registry has one."""
    registry = EXPERIMENT_REGISTRY.expanduser()
    if not registry.is_file():
        return None
    try:
        record = json.loads(registry.read_text()).get(experiment_id)
    except (json.JSONDecodeError, AttributeError):
        return None
    log_dir = record.get("logDir") if isinstance(record, dict) else None
    return Path(log_dir).expanduser() if log_dir else None


# ----------------------------------------------------------------- 4. NNI's trial reporting
def continue_intermediate_sequence(reported: int) -> None:
    """Number this trial's next ``nni.report_intermediate_result`` ``reported`` (results 0 to
    ``reported - 1`` were sent before the trial resumed)."""
    import nni.trial

    nni.trial.overwrite_intermediate_seq(int(reported))
