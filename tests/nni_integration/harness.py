"""Drive a REAL NNI 3.0 manager from tests: ``nnictl create`` on 127.0.0.1, REST polling, ``nnictl stop``.

Everything an experiment writes stays under one temporary folder: ``HOME`` points there (NNI keeps
its experiment registry at ``~/nni-experiments/.experiment`` and trials inherit the variable, so
synthetic-data caches land there too) and the config's ``experimentWorkingDirectory`` is rewritten
to it. Routes are the ones the installed ``nni_node/rest_server/restHandler.js`` serves.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nni_covid3d.nnictl.run import free_port, prepare_config

rewrite_config = prepare_config  # the configs' test copies are made the way users' runs are

TERMINAL_TRIAL_STATES = {"SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"}


@dataclass
class NniExperiment:
    """A running experiment started by :func:`start_experiment`."""

    id: str
    port: int
    home: Path
    work_dir: Path
    manager_pid: int
    env: dict[str, str] = field(repr=False)
    seen_pids: dict[int, float] = field(default_factory=dict)  # pid -> start time (clock ticks)

    # ---- REST ----------------------------------------------------------------------------------
    def get(self, route: str) -> Any:
        """``GET /api/v1/nni/<route>`` as parsed JSON (or text)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/nni/{route.lstrip('/')}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read().decode()
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return body

    def status(self) -> dict:
        return self.get("check-status")

    def trials(self) -> list[dict]:
        return self.get("trial-jobs")

    def metrics(self, trial_id: str | None = None) -> list[dict]:
        return self.get(f"metric-data/{trial_id}" if trial_id else "metric-data")

    def trial_file(self, trial_id: str, name: str = "stderr") -> str:
        """A trial's ``stdout``/``stderr``/``trial.log`` as served by the manager."""
        return self.get(f"trial-file/{trial_id}/{name}")

    def trial_pids(self, trial_id: str) -> list[int]:
        """The live python processes running trial ``trial_id`` (``python -m nni_covid3d.trial ...``)."""
        return [pid for pid in _pids_with_env("NNI_TRIAL_JOB_ID", trial_id)
                if "nni_covid3d.trial" in _cmdline(pid)]

    # ---- life cycle ----------------------------------------------------------------------------
    def wait(self, n_trials: int, timeout: float) -> list[dict]:
        """Poll until ``n_trials`` trials are terminal and the manager reports DONE; return trials."""
        deadline = time.monotonic() + timeout
        trials: list[dict] = []
        while time.monotonic() < deadline:
            self.record_processes()
            status = self.status()
            if status["status"] == "ERROR":
                raise AssertionError(f"experiment {self.id} in ERROR: {status['errors']}\n{self.logs()}")
            trials = self.trials()
            terminal = [t for t in trials if t["status"] in TERMINAL_TRIAL_STATES]
            if len(terminal) >= n_trials and status["status"] in ("DONE", "NO_MORE_TRIAL") and len(terminal) == len(trials):
                return trials
            time.sleep(1.0)
        raise AssertionError(f"experiment {self.id} not done after {timeout}s: {trials}\n{self.logs()}")

    def logs(self) -> str:
        """The manager's and dispatcher's logs (for failure messages)."""
        parts = []
        for name in ("nnimanager.log", "dispatcher.log"):
            path = self.work_dir / self.id / "log" / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text()[-4000:])
        return "\n".join(parts)

    def stop(self) -> None:
        self.record_processes()
        nnictl = Path(sys.executable).with_name("nnictl")
        subprocess.run([str(nnictl), "stop", self.id], env=self.env, capture_output=True, text=True, timeout=120)

    def record_processes(self) -> None:
        """Remember the manager and every descendant (dispatcher, trials) to check they all end."""
        for pid in _descendants(self.manager_pid) | {self.manager_pid}:
            start = _start_time(pid)
            if start is not None:
                self.seen_pids.setdefault(pid, start)

    def leftover_processes(self, timeout: float = 20.0) -> list[str]:
        """Processes of this experiment still alive after ``timeout`` s: seen ones and any with its id."""
        deadline = time.monotonic() + timeout
        while True:
            alive = [pid for pid, start in self.seen_pids.items() if _start_time(pid) == start]
            alive += [pid for pid in _pids_with_env("NNI_EXP_ID", self.id) if pid not in alive]
            if not alive or time.monotonic() > deadline:
                return [f"{pid}: {_cmdline(pid)}" for pid in alive]
            time.sleep(0.5)


def start_experiment(config_path: Path, home: Path, work_dir: Path, port: int | None = None) -> NniExperiment:
    """``nnictl create --config config_path --port P`` with ``HOME=home``; returns the live experiment."""
    home.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = dict(os.environ, HOME=str(home), PYTHONDONTWRITEBYTECODE="1")
    nnictl = Path(sys.executable).with_name("nnictl")
    done = subprocess.run(
        [str(nnictl), "create", "--config", str(config_path), "--port", str(port)],
        env=env, capture_output=True, text=True, timeout=180,
    )
    registry = home / "nni-experiments" / ".experiment"
    if done.returncode != 0 or not registry.exists():
        raise AssertionError(f"nnictl create failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    experiments = json.loads(registry.read_text())
    (exp_id, record), = experiments.items()
    experiment = NniExperiment(exp_id, port, home, work_dir, int(record["pid"]), env)
    experiment.record_processes()
    return experiment


# ---- /proc helpers (Linux) -------------------------------------------------------------------------
def _start_time(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended; only its parent has not reaped it yet
        return None
    return float(fields[19])


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    stack = [pid]
    while stack:
        current = stack.pop()
        for task in Path(f"/proc/{current}/task").glob("*") if Path(f"/proc/{current}/task").exists() else []:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    stack.append(child)
    return found


def _pids_with_env(name: str, value: str) -> list[int]:
    needle = f"{name}={value}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and _start_time(int(proc.name)) is not None:
            pids.append(int(proc.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"
