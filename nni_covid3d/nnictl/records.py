"""Read a (running or finished) nnictl experiment from disk: trials, metrics, best architecture, tables.

NNI 3.0 keeps everything an experiment records in a SQLite database in the experiment's folder, and
nnictl registers each experiment's working directory. Reading those needs no running NNI manager, so
``report`` and ``best-arch`` work on stopped experiments too. They are NNI's storage, not an API:
:mod:`nni_covid3d.compat` alone knows their places, tables and columns.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nni_covid3d.compat import EXPERIMENT_DB, NNI_HOME, read_experiment_db, registered_log_dir

__all__ = [
    "ExperimentNotFound",
    "TrialRecord",
    "ExperimentRecord",
    "find_experiment_dir",
    "load_experiment",
    "best_trial",
    "best_architecture",
    "baseline_rows",
    "trial_rows",
    "format_table",
]

class ExperimentNotFound(FileNotFoundError):
    """No experiment folder (with its database) for the given id."""


@dataclass
class TrialRecord:
    """One trial as recorded by the NNI manager."""

    id: str
    sequence: int
    status: str
    parameters: dict[str, Any]
    output_dir: Path | None
    final: dict[str, Any] | None = None
    intermediate: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ExperimentRecord:
    """An experiment's config (``params``, the canonical nnictl config) and its trials by sequence."""

    id: str
    directory: Path
    config: dict[str, Any]
    trials: list[TrialRecord]

    @property
    def optimize_mode(self) -> str:
        """``maximize`` or ``minimize``, from the tuner's ``classArgs`` (NNI's default: maximize)."""
        tuner = self.config.get("tuner") or {}
        return str((tuner.get("classArgs") or {}).get("optimize_mode", "maximize"))

    @property
    def trial_mode(self) -> str | None:
        """The ``nni_covid3d.trial`` mode of the trial command (``arch``, ``baseline``, ``dnas``), if any."""
        words = str(self.config.get("trialCommand", "")).split()
        for i, word in enumerate(words[:-1]):
            if word == "nni_covid3d.trial":
                return words[i + 1]
        return None


def find_experiment_dir(experiment_id: str, experiment_dir: Path | None = None) -> Path:
    """The folder of ``experiment_id``: ``experiment_dir`` itself (if it holds the experiment's database),
    ``experiment_dir/<id>``, the working directory nnictl registered ``/<id>``, or ``~/nni-experiments/<id>``."""
    candidates: list[Path] = []
    if experiment_dir is not None:
        experiment_dir = experiment_dir.expanduser()
        candidates += [experiment_dir, experiment_dir / experiment_id]
    log_dir = registered_log_dir(experiment_id)
    if log_dir is not None:
        candidates.append(log_dir / experiment_id)
    candidates.append(NNI_HOME.expanduser() / experiment_id)
    for candidate in candidates:
        if (candidate / EXPERIMENT_DB).is_file():
            return candidate
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ExperimentNotFound(
        f"experiment {experiment_id!r}: no {EXPERIMENT_DB.as_posix()} in {looked} "
        "(pass --experiment-dir with the config's experimentWorkingDirectory)"
    )


def _decode_metric(raw: str) -> Any:
    """Metric data is stored JSON-encoded twice (``'"{\\"default\\": 0.5}"'`` or ``'"0.5"'``)."""
    value = json.loads(raw)
    while isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            break
    return value


def _as_dict(metric: Any) -> dict[str, Any]:
    return dict(metric) if isinstance(metric, dict) else {"default": metric}


def load_experiment(experiment_id: str, experiment_dir: Path | None = None) -> ExperimentRecord:
    """Everything the NNI manager recorded about an experiment, read from its SQLite database."""
    directory = find_experiment_dir(experiment_id, experiment_dir)
    tables = read_experiment_db(directory / EXPERIMENT_DB, experiment_id)
    config = json.loads(tables.profile) if tables.profile else {}

    trials: dict[str, TrialRecord] = {}
    by_parameter_id: dict[str, dict[str, Any]] = {}
    for trial_id, event, data, log_path, sequence in tables.events:
        trial = trials.get(trial_id)
        if trial is None:
            trial = trials[trial_id] = TrialRecord(trial_id, int(sequence if sequence is not None else -1), event, {}, None)
        trial.status = event
        payload = json.loads(data) if data else None
        if isinstance(payload, dict):
            parameters = dict(payload.get("parameters", payload))
            if "parameter_id" in payload:
                by_parameter_id[str(payload["parameter_id"])] = parameters
            if not trial.parameters:
                trial.parameters = parameters
        if log_path and trial.output_dir is None:
            trial.output_dir = Path(log_path)
    for trial_id, parameter_id, kind, data in tables.metrics:
        trial = trials.get(trial_id)
        if trial is None:
            continue
        # NNI's manager may hand queued parameters to whichever trial asks first, and then record the
        # other trial's parameters in its event; the metrics carry the id of those it really trained.
        if parameter_id is not None and str(parameter_id) in by_parameter_id:
            trial.parameters = by_parameter_id[str(parameter_id)]
        value = _as_dict(_decode_metric(data))
        if kind == "FINAL":
            trial.final = value
        elif kind == "PERIODICAL":
            trial.intermediate.append(value)
    return ExperimentRecord(experiment_id, directory, config, sorted(trials.values(), key=lambda t: t.sequence))


def best_trial(record: ExperimentRecord, metric: str = "default") -> TrialRecord:
    """The SUCCEEDED trial with the best final ``metric`` (direction: the tuner's optimize_mode)."""
    scored = [t for t in record.trials
              if t.status == "SUCCEEDED" and t.final is not None and isinstance(t.final.get(metric), (int, float))]
    if not scored:
        states = ", ".join(f"{t.id}: {t.status}" for t in record.trials) or "no trials"
        raise ValueError(f"experiment {record.id}: no succeeded trial with a final {metric!r} ({states})")
    sign = -1.0 if record.optimize_mode == "minimize" else 1.0
    # Ties go to the earlier trial.
    return max(scored, key=lambda t: (sign * float(t.final[metric]), -t.sequence))


def best_architecture(record: ExperimentRecord, metric: str = "default") -> tuple[TrialRecord, dict[str, Any]]:
    """The best trial and its architecture (validated): the ``architecture.json`` it stored, or, for
    ``arch`` trials whose folder is not on this machine (remote), one rebuilt from its parameters."""
    from nni_covid3d.search_spaces import choices_from_hpo, export_architecture, load_architecture

    trial = best_trial(record, metric)
    path = trial.output_dir / "architecture.json" if trial.output_dir is not None else None
    if path is not None and path.is_file():
        arch = load_architecture(path)
    elif record.trial_mode == "arch":
        config = _space_config_from_command(str(record.config.get("trialCommand", "")))
        arch = export_architecture(config, choices_from_hpo(config, trial.parameters))
    else:
        raise ExperimentNotFound(
            f"experiment {record.id}: best trial {trial.id} stored no architecture file at {path} "
            "(a remote trial? copy its trial folder here first)"
        )
    metadata = dict(arch.get("metadata") or {})
    metadata.update({"experiment": record.id, "trial": trial.id, "final_result": trial.final,
                     "parameters": trial.parameters})
    arch["metadata"] = metadata
    return trial, arch


def _space_config_from_command(command: str) -> dict[str, Any]:
    words = command.split()
    if "--space-config" in words:
        path = Path(words[words.index("--space-config") + 1]).expanduser()
        return json.loads(path.read_text())
    preset = words[words.index("--preset") + 1] if "--preset" in words else "S"
    return {"preset": preset}


# -------------------------------------------------------------------------------------------- tables
def baseline_rows(record: ExperimentRecord, *, include_reported: bool = True) -> list[dict[str, Any]]:
    """Rows of ``nni-covid3d compare``'s table (``nni_covid3d.compare.COLUMNS``), one per succeeded
    model x dataset trial, from its final result; the papers' figures follow each dataset's rows."""
    from nni_covid3d.compare import DATASET_TITLES, reported_rows
    from nni_covid3d.models import DISPLAY_NAMES

    ours: dict[str, list[dict[str, Any]]] = {}
    for trial in record.trials:
        if trial.status != "SUCCEEDED" or trial.final is None:
            continue
        final = trial.final
        dataset = str(trial.parameters.get("dataset", "?"))
        model = str(trial.parameters.get("model", "?"))
        ours.setdefault(dataset, []).append({
            "dataset": DATASET_TITLES.get(dataset, dataset),
            "model": DISPLAY_NAMES.get(model, model),
            "source": f"ours (trial {trial.id})",
            "params": final.get("params"),
            "size_mb": final.get("size_mb"),
            "gflops": final.get("gflops"),
            "latency_ms": final.get("latency_ms"),
            **{key: _percent(final.get(f"test_{key}"))
               for key in ("accuracy", "balanced_accuracy", "precision", "sensitivity", "f1")},
            "auc": final.get("test_auc"),
        })
    if not ours:
        states = ", ".join(f"{t.id}: {t.status}" for t in record.trials) or "no trials"
        raise ValueError(f"experiment {record.id}: no succeeded trial to tabulate ({states})")
    rows: list[dict[str, Any]] = []
    for dataset in sorted(ours):
        rows += sorted(ours[dataset], key=lambda row: row["model"])
        if include_reported:
            rows += reported_rows([dataset])
    return rows


TRIAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trial", "trial"),
    ("status", "status"),
    ("default", "val acc. (%)"),
    ("size_mb", "size (MB)"),
    ("epochs", "epochs reported"),
    ("parameters", "parameters"),
)


def trial_rows(record: ExperimentRecord) -> list[dict[str, Any]]:
    """One row per trial (any experiment): status, final validation accuracy (%), size, parameters."""
    rows = []
    for trial in record.trials:
        final = trial.final or {}
        rows.append({
            "trial": trial.id,
            "status": trial.status,
            "default": _percent(final.get("default")),
            "size_mb": final.get("size_mb"),
            "epochs": len(trial.intermediate),
            "parameters": json.dumps(trial.parameters, sort_keys=True, separators=(",", ":")),
        })
    return rows


def _percent(value: Any) -> float | None:
    return round(100.0 * float(value), 2) if isinstance(value, (int, float)) else None


def format_table(rows: Sequence[dict[str, Any]], fmt: str = "md",
                 columns: Sequence[tuple[str, str]] = TRIAL_COLUMNS) -> str:
    """Rows as a Markdown (``md``) or CSV (``csv``) table (``nni_covid3d.tables``)."""
    from nni_covid3d.tables import csv_table, markdown_table

    if fmt not in ("md", "csv"):
        raise ValueError(f"table format must be 'md' or 'csv', got {fmt!r}")
    return markdown_table(rows, columns) if fmt == "md" else csv_table(rows, columns)
