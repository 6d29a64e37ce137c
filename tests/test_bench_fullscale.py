"""benchmarks/bench_fullscale.py at toy scale on the CPU: the JSON's fields, the cut epoch, the sharded writer."""
from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TOY = ["--accelerator", "cpu", "--patients", "24", "--synth-size", "32", "--slices", "8", "12", "--size", "8", "32", "32",
       "--batch-size", "4"]


@pytest.fixture
def bench(monkeypatch):
    """The benchmark script as a module (its folder on sys.path, as the processes it spawns need)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_fullscale")


def test_toy_run_writes_timings_ratios_and_targets(bench, tmp_path):
    out = tmp_path / "fs.json"
    # The search epoch has 3 steps, the retrain epoch 7: --max-steps 5 cuts the retrain only.
    result = bench.main([*TOY, "--max-steps", "5", "--warmup-steps", "1", "--work-dir", str(tmp_path / "work"),
                         "--augment-on", "device", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["args"]["augment_on"] == "device"

    data = result["data"]
    assert data["written"] and data["scans"] > 24 and data["synth"]["seconds"] > 0
    assert data["synth"]["extrapolated_s"]["2500_scans_1_process"] > 0
    assert data["warm"]["seconds"] > 0 and data["warm"]["computed_by_library_warm"] == data["warm"]["scans"]
    assert data["split"]["train"]["scans"] + data["split"]["val"]["scans"] == data["warm"]["scans"]
    for name in ("torch", "pytorch-lightning", "nni", "monai", "device_name", "load_average_start", "load_average_end"):
        assert result["environment"][name], name
    assert result["loader"]["workers"] == 0  # the CPU default

    assert set(result["runs"]) == {"32-true", "bf16-mixed"}
    for phases in result["runs"].values():
        for phase in ("search", "retrain"):
            run = phases[phase]
            assert "error" not in run, run.get("error")
            assert run["median_step_s"] > 0 and run["median_data_wait_s"] >= 0 and run["steps_per_s"] > 0
            assert 0 <= run["data_wait_share"] < 1 and run["epoch_s_measured"] > 0 and run["fit_s"] > 0
            assert len(run["step_s"]) == len(run["data_wait_s"]) == run["steps_run"]
        assert not phases["search"]["cut_short"] and phases["search"]["epoch_s"] == phases["search"]["epoch_s_measured"]
        assert phases["search"]["gpu_hours_100_epochs"] == pytest.approx(phases["search"]["epoch_s"] * 100 / 3600)
        retrain = phases["retrain"]
        assert retrain["cut_short"] and retrain["steps_run"] == 5 and retrain["steps_per_epoch"] == 7
        assert retrain["epoch_s"] > retrain["epoch_s_measured"]

    ratios = result["ratios"]
    assert ratios["bf16_over_fp32_step"]["search"] > 0 and ratios["bf16_over_fp32_step"]["retrain"] > 0
    assert set(ratios["search_over_subnet_step"]) == {"32-true", "bf16-mixed"}
    targets = {t["name"]: t for t in result["targets"]}
    assert set(targets) == {"search_100_epochs_gpu_hours", "data_wait_share", "bf16_over_fp32_step",
                            "search_over_subnet_step"}
    for target in targets.values():
        assert target["value"] is not None and target["pass"] == (target["value"] <= target["limit"])
    assert result["retrain_architecture"] and result["wall_s"] > 0


@pytest.mark.slow
def test_sharded_writer_makes_one_readable_ccccii_root(bench, tmp_path):
    from nni_covid3d.data import load_dataset

    root = tmp_path / "ccccii"
    info = bench.write_ccccii(root, 7, size=32, slices=(4, 6), seed=0, processes=2)
    assert info["processes"] == 2 and info["cpu_seconds"] > 0
    assert not (tmp_path / ".ccccii-shards").exists()
    index = load_dataset("ccccii", root)  # cross-checks every folder label against unzip_filenames.csv
    assert len({scan.patient_id for scan in index.scans}) == 7
    with (root / "unzip_filenames.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(index.scans)
    diseased = [scan for scan in index.scans if scan.label_name != "Normal"]
    assert diseased and all(scan.mask_path is not None and scan.mask_path.is_file() for scan in diseased)
    assert set(index.metadata["lesion_slices"]) <= {scan.key for scan in index.scans}


def test_a_failing_phase_is_recorded_and_the_run_goes_on(bench, tmp_path, monkeypatch):
    def no_data(args, work, result):
        result["data"] = {"scans": 0}

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(bench, "prepare_data", no_data)
    monkeypatch.setattr(bench, "time_search", out_of_memory)
    result = bench.main(["--accelerator", "cpu", "--work-dir", str(tmp_path), "--out", str(tmp_path / "fs.json")])
    for phases in result["runs"].values():
        assert phases["search"] == {"error": "RuntimeError: CUDA out of memory"}
        assert "no search epoch has finished" in phases["retrain"]["error"]
    assert all(target["pass"] is None for target in result["targets"])
    assert json.loads((tmp_path / "fs.json").read_text())["runs"] == result["runs"]


def test_options_are_checked(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--max-steps", "2", "--warmup-steps", "3"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch-size", "1"])
