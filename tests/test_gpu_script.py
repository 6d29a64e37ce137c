"""benchmarks/gpu/run_all.sh --rehearse: every command of the GPU run, on the CPU at toy sizes, succeeds and
leaves its results where the device returns them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = ("bench_fullscale.json", "bench_fullscale_device.json", "bench_search_small.json", "bench_channels_last.json",
           "bench_augment.json")


@pytest.mark.slow
def test_the_rehearsal_runs_every_command_and_writes_what_the_device_returns(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", "benchmarks/gpu/run_all.sh", "--rehearse"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "OUT": str(out), "PYTHON": sys.executable,
                                                       "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([*RESULTS, "commands.log", "run_all.log", "versions.txt"])
    assert len(files) <= 8  # what the device returns from $OUT at most
    assert "done: 0 command(s) failed" in (out / "run_all.log").read_text()

    log = (out / "commands.log").read_text()
    assert "== gpu_tests:" in log and "error" not in log.split("== bench_fullscale:")[0].lower()
    fullscale = json.loads((out / "bench_fullscale.json").read_text())
    assert set(fullscale["runs"]) == {"32-true", "bf16-mixed"}
    for phases in fullscale["runs"].values():
        assert all("error" not in phases[phase] for phase in ("search", "retrain")), phases
    on_device = json.loads((out / "bench_fullscale_device.json").read_text())
    assert not on_device["data"]["written"] and on_device["data"]["device_cache"]["scans"] > 0  # the same data
    assert on_device["loader"]["kind"] == "device" and "error" not in on_device["runs"]["bf16-mixed"]["search"]
    assert all(run["status"] == "ok" for run in json.loads((out / "bench_search_small.json").read_text()))
    assert json.loads((out / "bench_channels_last.json").read_text())["models"]["default"]["step_s"]["channels_last"]
    assert json.loads((out / "bench_augment.json").read_text())["summary"]["search"]["device_over_loader"] > 0
