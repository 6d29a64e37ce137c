"""``make demo``'s pipeline (``nni_covid3d.cli.demo``) end to end at toy budgets."""
from __future__ import annotations

import json

import pytest

from nni_covid3d.cli.demo import DemoSettings, run_demo


@pytest.mark.slow
def test_demo_runs_every_step_and_writes_its_outputs(tmp_path, capsys):
    settings = DemoSettings(patients=15, phantom_size=32, slices=(8, 10), depth=8, size=32, widths=(8, 8, 8, 8, 8, 8),
                            n_cells=(1, 1, 1, 1, 1, 1), head_channels=16, search_epochs=1, retrain_epochs=1, batch_size=4)
    stale = tmp_path / "data" / "ccccii" / "NCP" / "left_by_an_older_demo"
    stale.mkdir(parents=True)  # data written with other settings is not reused
    assert run_demo(tmp_path, settings) == 0
    out = capsys.readouterr().out
    for step in ("1 synth", "2 search", "3 arch", "4 retrain", "5 compare", "6 cam", "7 predict"):
        assert f"[{step}] done in" in out
    assert "searched model, test accuracy" in out and not stale.exists()
    assert f"--phantom shape --slices 8 10 --involvement {settings.involvement[0]} {settings.involvement[1]}" in out
    metrics = json.loads((tmp_path / "compare" / "ccccii" / "covidnet3d" / "eval_test" / "metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0
    table = (tmp_path / "compare" / "comparison.md").read_text()
    assert "CovidNet3D (searched)" in table and "reported" in table
    scores = json.loads((tmp_path / "cam" / "cam_scores.json").read_text())
    for method in ("gradcam", "occlusion"):
        assert {"hit_rate", "hit_rate_strict", "shuffled_hit_rate", "chance_hit_rate"} <= set(scores[method])
    assert any((tmp_path / "predict_cam").iterdir())
