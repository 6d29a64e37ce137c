"""Run one of the nnictl configs to completion from Python: ``nnictl create``, wait, ``nnictl stop``.

Used by the demo and the tests; equivalent to what a user does by hand with
``nnictl create --config FILE --port P``, watching the web UI, then ``nnictl stop ID``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "free_port", "prepare_config", "nnictl_create", "wait_until_done", "nnictl_stop", "run_config",
    "runs_on_other_machines",
]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 whose successor is free too (NNI's remote mode needs port + 1)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        if port < 65000:
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def prepare_config(
    config_path: Path,
    out_path: Path,
    work_dir: Path,
    *,
    extra_trial_args: str = "",
    overrides: dict[str, Any] | None = None,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Write a runnable copy of a user-facing config and return it.

    The leading ``python`` of ``trialCommand`` becomes ``python`` (this interpreter by default), except
    in configs whose trials run on other machines (``remote``), where it stays as written;
    ``extra_trial_args`` are appended (argparse keeps the last value, so they override the budget);
    relative paths are resolved against the original config's folder; NNI's working directory
    (logs, database, trial folders) becomes ``work_dir``; ``overrides`` replace top-level fields.
    """
    config_path = Path(config_path)
    config = yaml.safe_load(config_path.read_text())
    command = shlex.split(config["trialCommand"])
    if command[0] not in ("python", "python3"):
        raise ValueError(f"{config_path}: trialCommand should start with 'python', got {command[0]!r}")
    if runs_on_other_machines(config):  # each machine's pythonPath decides which `python` runs there
        python = command[0]
    command[0] = python
    config["trialCommand"] = shlex.join(command) + (" " + extra_trial_args if extra_trial_args else "")
    base = config_path.parent
    for key in ("searchSpaceFile", "trialCodeDirectory"):
        if key in config and not Path(os.path.expanduser(config[key])).is_absolute():
            config[key] = str((base / config[key]).resolve())
    config.setdefault("trialCodeDirectory", str(base.resolve()))
    config["experimentWorkingDirectory"] = str(Path(work_dir).resolve())
    config.update(overrides or {})
    Path(out_path).write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def runs_on_other_machines(config: dict[str, Any]) -> bool:
    """Whether a config's trials run on machines other than this one (any non-``local`` training service)."""
    services = config.get("trainingService") or {}
    services = services if isinstance(services, list) else [services]
    return any(service.get("platform", "local") != "local" for service in services)


def _nnictl() -> str:
    beside = Path(sys.executable).with_name("nnictl")
    return str(beside) if beside.exists() else "nnictl"


def nnictl_create(config_path: Path, port: int, env: dict[str, str] | None = None) -> str:
    """``nnictl create --config config_path --port port``; returns the experiment id."""
    done = subprocess.run([_nnictl(), "create", "--config", str(config_path), "--port", str(port)],
                          env=env, capture_output=True, text=True, timeout=180)
    match = re.search(r"Experiment ID:\s*(\w+)", _ANSI.sub("", done.stdout + done.stderr))
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"nnictl create --config {config_path} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return match.group(1)


def rest_get(port: int, route: str) -> Any:
    """``GET http://127.0.0.1:port/api/v1/nni/<route>`` as parsed JSON."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{route.lstrip('/')}", timeout=30) as response:
        return json.loads(response.read().decode())


def wait_until_done(port: int, timeout: float, poll: float = 1.0) -> list[dict[str, Any]]:
    """Poll ``check-status`` until the manager says DONE (all trials ended); returns ``trial-jobs``.

    Raises ``RuntimeError`` if the manager reports ERROR, ``TimeoutError`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = rest_get(port, "check-status")
        if status["status"] == "ERROR":
            raise RuntimeError(f"NNI manager on port {port} reports errors: {status['errors']}")
        if status["status"] == "DONE":
            return rest_get(port, "trial-jobs")
        if time.monotonic() > deadline:
            raise TimeoutError(f"experiment on port {port} not done after {timeout:.0f}s (status {status['status']})")
        time.sleep(poll)


def nnictl_stop(experiment_id: str, env: dict[str, str] | None = None) -> None:
    """``nnictl stop ID`` (returns once the manager has exited)."""
    subprocess.run([_nnictl(), "stop", experiment_id], env=env, capture_output=True, text=True, timeout=180)


def run_config(
    config_path: Path,
    work_dir: Path,
    *,
    max_trials: int | None = None,
    extra_trial_args: str = "",
    overrides: dict[str, Any] | None = None,
    port: int | None = None,
    timeout: float = 3600.0,
) -> tuple[str, list[dict[str, Any]]]:
    """Run an nnictl config until its trials end, then stop it; returns ``(experiment id, trial-jobs)``.

    ``work_dir`` receives the runnable config copy and NNI's experiment folder; follow with
    ``nni_covid3d.nnictl.records.load_experiment(id, work_dir / "nni-experiments")``.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    overrides = dict(overrides or {})
    if max_trials is not None:
        overrides["maxTrialNumber"] = max_trials
    runnable = work_dir / Path(config_path).name
    prepare_config(Path(config_path), runnable, work_dir / "nni-experiments",
                   extra_trial_args=extra_trial_args, overrides=overrides)
    port = port or free_port()
    experiment_id = nnictl_create(runnable, port)
    try:
        trials = wait_until_done(port, timeout)
    finally:
        nnictl_stop(experiment_id)
    return experiment_id, trials
