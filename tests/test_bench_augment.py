"""benchmarks/bench_augment.py at toy scale on the CPU: both ways timed, the JSON's fields."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_toy_run_times_both_ways_and_a_train_step(tmp_path):
    out = tmp_path / "augment.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_augment.py"), "--sizes", "search", "--batch", "2",
                           "--slices", "20", "--warmup", "1", "--rounds", "1", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    timed = result["results"]["search"]
    assert {way: len(times) for way, times in timed["batch_s"].items()} == {"loader": 2, "device": 2}
    assert timed["train_step_s"] > 0
    assert result["device_over_loader_time"]["search"] == timed["median_batch_s"]["device"] / timed["median_batch_s"]["loader"]
