"""NNI's ``remote`` training service, launched: trials run over SSH on two machine entries.

Real OpenSSH servers (``/usr/sbin/sshd``, installed from Debian's ``openssh-server`` when missing
and the tests run as root) listen on 127.0.0.1 with a generated host key and key-only login. Each
stands for one machine: its sessions get their own ``HOME`` (sshd's ``SetEnv``), so each machine
keeps its own data cache, and each ``machineList`` entry names its own ``pythonPath``. The config
under test is ``examples/nnictl/arch_search_remote.yml`` with its placeholders (addresses, key,
environment, data, GPU) filled in; it runs through ``nnictl create`` and ``nnictl stop``. In NNI's
reuse mode (the config's) each machine works in ``/tmp/nni-experiments/<ID>``: ``envs/<env>/`` per
machine entry, ``trials/<trial>/`` per trial; the tests remove that folder afterwards.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from nni_covid3d.nnictl.run import free_port
from tests.conftest import REPO_ROOT
from tests.nni_integration.harness import (
    NniExperiment,
    _pids_with_env,
    _start_time,
    rewrite_config,
    start_experiment,
)
from tests.nni_integration.test_nnictl_experiments import (  # noqa: F401  (cli is a fixture)
    TINY,
    TRIAL_TIMEOUT,
    assert_succeeded_with_metrics,
    cli,
)

pytestmark = pytest.mark.slow

SSHD = Path("/usr/sbin/sshd")
REMOTE_CONFIG = REPO_ROOT / "examples" / "nnictl" / "arch_search_remote.yml"
#: Where NNI's reuse mode works on a Linux machine (fixed in NNI 3.0).
REMOTE_ROOT = Path("/tmp/nni-experiments")
#: The environment of every SSH session: one intra-op thread per trial on this small machine, and
#: no package index (NNI would pip-install nni where it is missing; it never is here).
SESSION_ENV = {"OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1"}


# ---- SSH machines -----------------------------------------------------------------------------------
def ensure_sshd() -> Path:
    """``/usr/sbin/sshd``, installing Debian's ``openssh-server`` when it is missing (root only)."""
    if SSHD.exists():
        return SSHD
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no OpenSSH server (/usr/sbin/sshd), and only root with apt-get can install it here: "
                    "apt-get install -y openssh-server")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"]
    if subprocess.run(install, env=env, capture_output=True, text=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"apt-get install openssh-server failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    return SSHD


def keygen(path: Path) -> Path:
    """A passphrase-less ed25519 key pair: ``path`` (private) and ``path.pub``."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True, timeout=60)
    return path


@dataclass
class SshMachine:
    """One sshd on 127.0.0.1 standing for a machine: its port and the ``HOME`` of its sessions."""

    name: str
    port: int
    home: Path
    process: subprocess.Popen
    log: Path

    def entry(self, key: Path, python_path: Path | None = None) -> dict:
        """Its ``trainingService.machineList`` entry (NNI 3.0 schema)."""
        return {"host": "127.0.0.1", "port": self.port, "user": pwd.getpwuid(os.geteuid()).pw_name,
                "sshKeyFile": str(key), "pythonPath": str(python_path or Path(sys.executable).parent)}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def start_sshd(folder: Path, name: str, client_key: Path) -> SshMachine:
    """``sshd -D -f <config> -p <free port>`` on 127.0.0.1 that lets ``client_key`` (only) in."""
    sshd = ensure_sshd()
    home = folder / f"{name}-home"
    home.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / f"{name}-host-key")
    authorized = folder / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    config = folder / f"{name}-sshd_config"
    session_env = " ".join(f"{key}={value}" for key, value in {"HOME": home, **SESSION_ENV}.items())
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        "PidFile none",
        f"AuthorizedKeysFile {authorized}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",  # the key files live in the test's temporary folder
        "UsePAM no",
        "Subsystem sftp internal-sftp",  # NNI copies files over SFTP
        f"SetEnv {session_env}",
        "",
    ]))
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
    port = free_port()
    log = folder / f"{name}-sshd.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config), "-p", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return SshMachine(name, port, home, process, log)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"sshd on port {port} did not start:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    """The key NNI logs in with (``sshKeyFile``)."""
    ensure_sshd()  # openssh-server brings ssh-keygen
    (tmp_path / "ssh").mkdir()
    return keygen(tmp_path / "ssh" / "client-key")


@pytest.fixture
def machines(tmp_path: Path, client_key: Path) -> Iterator[list[SshMachine]]:
    """Two SSH machines on 127.0.0.1; their sshd processes end with the test."""
    started: list[SshMachine] = []
    try:
        for name in ("machine1", "machine2"):
            started.append(start_sshd(tmp_path / "ssh", name, client_key))
        yield started
    finally:
        for machine in started:
            machine.stop()


# ---- the config ---------------------------------------------------------------------------------------
def remote_config(tmp_path: Path, entries: list[dict], *, n_trials: int) -> tuple[Path, Path]:
    """The user-facing remote config for ``entries``: this machine as manager, CPU, a tiny budget,
    and synthetic phantoms (each machine writes them into its own ``~/.cache``) for the data path."""
    original = yaml.safe_load(REMOTE_CONFIG.read_text())
    words = shlex.split(original["trialCommand"])
    at = words.index("--data-root")
    command = shlex.join(words[:at] + words[at + 2:])
    work_dir = tmp_path / "nni-experiments"
    config = tmp_path / REMOTE_CONFIG.name
    # The trial command keeps `python`: each machine's pythonPath decides which one runs.
    written = rewrite_config(REMOTE_CONFIG, config, work_dir, overrides={
        "trialCommand": f"{command} {TINY} --accelerator cpu", "maxTrialNumber": n_trials,
        "trialConcurrency": len(entries), "trialGpuNumber": 0, "nniManagerIp": "127.0.0.1",
        "trainingService": {**original["trainingService"], "machineList": entries}})
    assert written["trainingService"]["reuseMode"] is True
    return config, work_dir


def runner_pids(experiment_id: str) -> dict[str, int]:
    """``{environment id: trial runner pid}`` from the machines' working directory."""
    return {pid_file.parent.name: int(pid_file.read_text().split()[0])
            for pid_file in (REMOTE_ROOT / experiment_id).glob("envs/*/pid") if pid_file.read_text().strip()}


def runner_home(pid: int) -> Path | None:
    """The ``HOME`` a live process runs with (which SSH machine started it)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    homes = [entry[5:].decode() for entry in environ if entry.startswith(b"HOME=")]
    return Path(homes[0]) if homes else None


def trials_run_by(experiment_id: str) -> dict[str, list[str]]:
    """``{environment id: [trial ids]}`` as each machine's trial runner logged them."""
    return {log.parent.name: re.findall(r"INFO (\w+): start to run trial", log.read_text())
            for log in (REMOTE_ROOT / experiment_id).glob("envs/*/trialrunner_stdout")}


@pytest.fixture
def remote_cleanup() -> Iterator[list[str]]:
    """Experiment ids whose machine-side folder (``/tmp/nni-experiments/<ID>``) goes after the test."""
    ids: list[str] = []
    yield ids
    for experiment_id in ids:
        shutil.rmtree(REMOTE_ROOT / experiment_id, ignore_errors=True)


# ---- tests ----------------------------------------------------------------------------------------------
def test_remote_config_runs_trials_on_both_machines(tmp_path: Path, machines: list[SshMachine], client_key: Path,
                                                    remote_cleanup: list[str], cli) -> None:
    config, work_dir = remote_config(tmp_path, [m.entry(client_key) for m in machines], n_trials=2)
    experiment = start_experiment(config, home=tmp_path / "home", work_dir=work_dir)
    remote_cleanup.append(experiment.id)
    try:
        trials = experiment.wait(2, timeout=TRIAL_TIMEOUT * 2)
        metrics = experiment.metrics()
        status = experiment.status()
        # The trial runners were started over SSH, outside the manager's process tree; they live
        # until the experiment stops. Which machine started each: its sessions' HOME.
        runners = runner_pids(experiment.id)
        homes = {env: runner_home(pid) for env, pid in runners.items()}
        for pid in runners.values():
            if (start := _start_time(pid)) is not None:
                experiment.seen_pids[pid] = start
    finally:
        experiment.stop()
    leftovers = experiment.leftover_processes()
    assert not leftovers, f"processes left after nnictl stop: {leftovers}"
    assert status["status"] == "DONE", f"{status}\n{experiment.logs()}"
    assert len(trials) == 2
    for trial in trials:
        assert trial["status"] == "SUCCEEDED", _runner_output(experiment.id)
    assert_succeeded_with_metrics(experiment, trials, metrics)

    # One machine entry, one environment, one trial each; each ran in its machine's SSH session.
    ran = trials_run_by(experiment.id)
    assert sorted(sum(ran.values(), [])) == sorted(t["trialJobId"] for t in trials), ran
    assert [len(ids) for ids in ran.values()] == [1, 1], ran
    assert sorted(map(str, homes.values())) == sorted(str(m.home) for m in machines), homes
    for machine in machines:
        assert "Accepted publickey" in machine.log.read_text()
        # Each machine wrote its own synthetic data (no --data-root) under its own HOME.
        assert list((machine.home / ".cache" / "nni-covid3d" / "synthetic").glob("ccccii-p9-*")), \
            f"{machine.name} wrote no data: {ran}, {homes}"
    # Each trial trained the parameters the manager recorded for it, and stored them beside its result.
    stored = {}
    for trial in trials:
        folder = REMOTE_ROOT / experiment.id / "trials" / trial["trialJobId"] / "nnioutput"
        result = json.loads((folder / "result.json").read_text())
        assert result["params"] == json.loads(trial["hyperParameters"][0])["parameters"], trial["trialJobId"]
        assert result["final"]["default"] == json.loads(json.loads(trial["finalMetricData"][0]["data"]))["default"]
        stored[trial["trialJobId"]] = json.loads((folder / "architecture.json").read_text())

    out = tmp_path / "best.json"
    done = cli("best-arch", "--experiment", experiment.id, "--out", str(out), home=experiment.home)
    assert done.returncode == 0, done.stderr
    from nni_covid3d.search_spaces import build_model, load_architecture

    arch = load_architecture(out)
    finals = {t["trialJobId"]: json.loads(json.loads(t["finalMetricData"][0]["data"]))["default"] for t in trials}
    assert finals[arch["metadata"]["trial"]] == max(finals.values())
    # Rebuilt here from the trial's parameters: the architecture the remote trial trained.
    assert arch["choices"] == stored[arch["metadata"]["trial"]]["choices"]
    build_model(arch)
    done = cli("report", "--experiment", experiment.id, home=experiment.home)
    assert done.returncode == 0, done.stderr
    assert all(t["trialJobId"] in done.stdout for t in trials)


def test_machine_without_the_package_fails_its_trial_with_the_import_error(
    tmp_path: Path, machines: list[SshMachine], client_key: Path, remote_cleanup: list[str]
) -> None:
    # An environment with NNI (and torch, ...) but without nni-covid3d: a bare venv that sees this
    # venv's site-packages as a plain path, so the editable install's finder never loads.
    bare = tmp_path / "bare-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    site = next((bare / "lib").glob("python3*/site-packages"))
    (site / "main-env.pth").write_text(str(next(Path(sys.prefix, "lib").glob("python3*/site-packages"))) + "\n")
    config, work_dir = remote_config(tmp_path, [machines[0].entry(client_key, bare / "bin")], n_trials=1)
    experiment = start_experiment(config, home=tmp_path / "home", work_dir=work_dir)
    remote_cleanup.append(experiment.id)
    try:
        (trial,) = experiment.wait(1, timeout=TRIAL_TIMEOUT)
        finals = [m for m in experiment.metrics() if m["type"] == "FINAL"]
        output = _runner_output(experiment.id)
        for pid in runner_pids(experiment.id).values():
            if (start := _start_time(pid)) is not None:
                experiment.seen_pids[pid] = start
    finally:
        experiment.stop()
    assert not experiment.leftover_processes()
    assert trial["status"] == "FAILED"
    assert (f"{bare}/bin/python: Error while finding module specification for 'nni_covid3d.trial' "
            "(ModuleNotFoundError: No module named 'nni_covid3d')") in output, output
    assert not finals


def test_unreachable_machine_fails_nnictl_create_with_the_connection_error(
    tmp_path: Path, client_key: Path, remote_cleanup: list[str]
) -> None:
    nobody = free_port()  # nothing listens there
    entry = {"host": "127.0.0.1", "port": nobody, "user": pwd.getpwuid(os.geteuid()).pw_name,
             "sshKeyFile": str(client_key), "pythonPath": str(Path(sys.executable).parent)}
    config, work_dir = remote_config(tmp_path, [entry], n_trials=1)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    started = time.monotonic()
    done = subprocess.run([str(Path(sys.executable).with_name("nnictl")), "create", "--config", str(config),
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=180)
    elapsed = time.monotonic() - started
    registry = json.loads((home / "nni-experiments" / ".experiment").read_text())
    (experiment_id, record), = registry.items()
    remote_cleanup.append(experiment_id)
    assert done.returncode != 0 and "Create experiment failed" in done.stdout + done.stderr, done
    assert elapsed < 120
    # The manager's own error, in the experiment's log folder: which machine, and why.
    stderr_log = (work_dir / experiment_id / "log" / "nnictl_stderr.log").read_text()
    assert f"Error: connect ECONNREFUSED 127.0.0.1:{nobody}" in stderr_log, stderr_log[-3000:]
    assert f"connecting to {entry['user']}@127.0.0.1:{nobody}" in \
        (work_dir / experiment_id / "log" / "nnimanager.log").read_text()
    manager = NniExperiment(experiment_id, 0, home, work_dir, int(record["pid"]), env)
    manager.record_processes()
    assert not manager.leftover_processes(timeout=30)
    assert not _pids_with_env("NNI_EXP_ID", experiment_id)


def test_runnable_copies_keep_python_for_the_machines_and_pin_it_locally(tmp_path: Path) -> None:
    from nni_covid3d.nnictl.run import prepare_config

    remote = prepare_config(REMOTE_CONFIG, tmp_path / "remote.yml", tmp_path / "work")
    local = prepare_config(REMOTE_CONFIG.with_name("arch_search.yml"), tmp_path / "local.yml", tmp_path / "work")
    assert shlex.split(remote["trialCommand"])[0] == "python"  # each machine's pythonPath finds it there
    assert shlex.split(local["trialCommand"])[0] == sys.executable


def _runner_output(experiment_id: str) -> str:
    """The machines' trial runner logs (they hold the trials' stdout and stderr in reuse mode)."""
    return "\n".join(f"--- {log}\n{log.read_text()[-3000:]}"
                     for log in sorted((REMOTE_ROOT / experiment_id).glob("envs/*/trialrunner_stdout")))
