"""``nni-covid3d synth`` and ``nni-covid3d data summary|split``."""
from __future__ import annotations

import json
import subprocess

from nni_covid3d.cli import main


def test_synth_summary_split(tmp_path, capsys):
    root = tmp_path / "mm"
    assert main(["synth", "--layout", "mosmed", "--out", str(root), "--patients", "6", "--seed", "1", "--size", "32", "--slices", "4", "6"]) == 0
    summary = capsys.readouterr().out
    assert "Normal" in summary and "NCP" in summary and "CT-" not in summary  # binary task by default
    assert main(["data", "summary", "--dataset", "mosmed", "--root", str(root), "--task", "severity", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["class_names"][0] == "CT-0" and sum(c["scans"] for c in payload["counts"].values()) == 6
    out = tmp_path / "split.json"
    assert main(["data", "split", "--dataset", "mosmed", "--root", str(root), "--out", str(out), "--test-fraction", "0.3"]) == 0
    split = json.loads(out.read_text())["splits"]
    assert sum(len(v) for v in split.values()) == 6
    assert main(["synth", "--layout", "mosmed", "--out", str(root), "--patients", "2"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["synth", "--layout", "mosmed", "--out", str(tmp_path / "m2"), "--involvement", "0.1", "0.2"]) == 1
    assert "CT-k grades" in capsys.readouterr().err


def test_missing_root_exits_1_without_traceback(venv_bin, tmp_path):
    result = subprocess.run(
        [str(venv_bin / "nni-covid3d"), "data", "summary", "--dataset", "ccccii", "--root", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "dataset root does not exist" in result.stderr and "Traceback" not in result.stderr
