"""The trial supervisor (``nni_covid3d.nnictl.supervise``) on its own, without an NNI manager.

A supervising python process runs a small child script; the tests end the child or the parent
the way the out-of-memory killer, a failing trial, ``nnictl stop`` or NNI's force kill would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nni_covid3d.nnictl.supervise import WORKER_ENV, launched_by_nni, should_supervise

SUPERVISOR = ("import sys; from nni_covid3d.nnictl.supervise import supervise; "
              "sys.exit(supervise([sys.executable, '-c', sys.argv[1]]))")


def start_supervised(child_script: str) -> subprocess.Popen:
    """A supervising python process running ``child_script`` in its child; text stdout/stderr pipes."""
    return subprocess.Popen([sys.executable, "-c", SUPERVISOR, textwrap.dedent(child_script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def first_line(process: subprocess.Popen) -> str:
    """The first stdout line of ``process`` (the child's, e.g. its pid once it is ready)."""
    line = process.stdout.readline()
    assert line, process.communicate(timeout=30)
    return line.strip()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_child_killed_by_sigkill_gives_137_and_says_why_on_stderr() -> None:
    parent = start_supervised("""
        import os, signal
        print(os.getpid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    child = int(first_line(parent))
    _, stderr = parent.communicate(timeout=60)
    assert parent.returncode == 137
    assert stderr.strip() == (
        f"trial failed: the training process (pid {child}) was killed by SIGKILL (signal 9); "
        "the usual cause is the out-of-memory killer or a scheduler; see dmesg / the job log")


def test_a_child_exit_code_is_passed_on_with_the_childs_own_message() -> None:
    parent = start_supervised("""
        import sys
        print("bad parameter", file=sys.stderr)
        sys.exit(3)
    """)
    _, stderr = parent.communicate(timeout=60)
    assert parent.returncode == 3
    assert stderr.strip() == "bad parameter"


@pytest.mark.parametrize("stop, child_ending", [
    (signal.SIGTERM, "dies by the signal"),
    (signal.SIGINT, "exits 1"),  # as Lightning's Trainer does on KeyboardInterrupt
], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_reaches_the_child_and_the_parent_ends_by_it(stop: signal.Signals, child_ending: str) -> None:
    parent = start_supervised(f"""
        import os, signal, sys, time

        def stop(signum, frame):
            print("child got", signum, flush=True)
            if {child_ending!r} == "exits 1":
                sys.exit(1)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        signal.signal({int(stop)}, stop)
        print(os.getpid(), flush=True)
        time.sleep(60)
    """)
    child = int(first_line(parent))
    parent.send_signal(stop)
    stdout, stderr = parent.communicate(timeout=30)
    assert stdout.strip() == f"child got {int(stop)}"
    assert parent.returncode == -stop  # ended by the signal: NNI reports a cancelled trial
    assert "trial failed" not in stderr
    assert not alive(child)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_the_child_dies_with_the_parent_when_the_parent_is_sigkilled() -> None:
    # NNI force-kills a trial that has not stopped 5 s after SIGINT: the training must not survive.
    parent = start_supervised("""
        import os, signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(os.getpid(), flush=True)
        time.sleep(60)
    """)
    child = int(first_line(parent))
    parent.kill()
    parent.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_only_a_process_started_by_nni_supervises_and_its_child_does_not() -> None:
    assert not launched_by_nni({}) and not launched_by_nni({"NNI_PLATFORM": "unittest"})
    assert launched_by_nni({"NNI_PLATFORM": "local", "NNI_TRIAL_COMMAND_CHANNEL": "http://127.0.0.1:1/env/x"})
    assert launched_by_nni({"NNI_PLATFORM": "remote"})
    assert should_supervise({"NNI_PLATFORM": "local"})
    assert not should_supervise({"NNI_PLATFORM": "local", WORKER_ENV: "1"})
    assert not should_supervise({})


def test_the_supervising_parent_loads_neither_torch_nor_nni() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, nni_covid3d.trial, nni_covid3d.nnictl.trial; "
         "print(sorted({'torch', 'nni', 'pytorch_lightning'} & set(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True)
    assert loaded.stdout.strip() == "[]"


def test_under_nni_a_trial_error_still_fails_with_code_1_and_its_message(tmp_path: Path) -> None:
    # NNI's legacy file channel (NNI_PLATFORM=local, no channel URL) hands the child its parameters.
    (tmp_path / "parameter.cfg").write_text(json.dumps({"parameter_id": 0, "parameters": {"s1_c1": "skip"}}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("NNI_")}
    env.update(NNI_PLATFORM="local", NNI_SYS_DIR=str(tmp_path), NNI_OUTPUT_DIR=str(tmp_path),
               NNI_TRIAL_JOB_ID="t0", NNI_EXP_ID="e0")
    done = subprocess.run([sys.executable, "-m", "nni_covid3d.trial", "arch", "--cache-dir", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "nni-covid3d trial (arch): error: invalid architecture from the tuner" in done.stderr
    assert "trial failed" not in done.stderr
