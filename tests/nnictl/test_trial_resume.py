"""A DNAS trial rerun by ``nnictl resume`` refuses a damaged search checkpoint, naming it and what to delete."""
from __future__ import annotations

import pytest

from nni_covid3d.nnictl import trial


def test_a_damaged_search_checkpoint_fails_the_rerun_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(trial, "launched_by_nni", lambda: True)  # as under NNI: checkpoints in the output folder
    output_dir = tmp_path / "trial"
    last = output_dir / "search" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut off by a kill")
    args = trial.build_parser().parse_args(
        ["dnas", "--epochs", "1", "--size", "8", "32", "32", "--synthetic-patients", "12", "--batch-size", "2",
         "--cache-dir", str(tmp_path / "cache"), "--accelerator", "cpu"])
    with pytest.raises(trial.TrialError, match=rf"cannot resume the search from {last}.*delete {last.parent}"):
        trial.run_dnas(args, {"tau_init": 5, "tau_final": 0.5, "arc_learning_rate": 0.01}, output_dir)
