"""``NniReporter``: the one object that reports to NNI, on a real Lightning fit."""
from __future__ import annotations

import nni
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from nni_covid3d.nnictl import NniReporter, reporter as reporter_module
from nni_covid3d.training import CovidClassifier


@pytest.fixture
def reported(monkeypatch):
    calls = {"intermediate": [], "final": []}
    monkeypatch.setattr(reporter_module, "in_nni_trial", lambda: True)
    monkeypatch.setattr(nni, "report_intermediate_result", calls["intermediate"].append)
    monkeypatch.setattr(nni, "report_final_result", calls["final"].append)
    return calls


def fit(reporter: NniReporter, epochs: int = 2) -> None:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(8, 1, 4, 8, 8), torch.tensor([0, 1] * 4))
    module = CovidClassifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2)), class_names=["a", "b"],
                             model_name="linear", max_epochs=epochs)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[reporter])
    trainer.fit(module, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))


def test_reports_each_validation_and_one_final_result(reported):
    reporter = NniReporter()
    fit(reporter)
    # The sanity check's validation is not a result.
    assert len(reported["intermediate"]) == 2 == len(reporter.history)
    assert set(reported["intermediate"][0]) == {"default", "val_bal_acc", "val_loss"}
    assert reported["final"] == reported["intermediate"][-1:]


def test_the_final_result_can_wait_for_extra_fields(reported):
    reporter = NniReporter(final_at_fit_end=False)
    fit(reporter)
    assert reported["final"] == []
    final = reporter.report_final(size_mb=1.5)
    assert reported["final"] == [final] and final == {**reporter.history[-1], "size_mb": 1.5}
    with pytest.raises(RuntimeError, match="already reported"):
        reporter.report_final()


def test_no_report_outside_a_trial(monkeypatch):
    calls = []
    monkeypatch.setattr(nni, "report_intermediate_result", calls.append)
    monkeypatch.setattr(nni, "report_final_result", calls.append)
    reporter = NniReporter()
    fit(reporter, epochs=1)
    assert calls == [] and len(reporter.history) == 1


def test_report_final_without_a_validation_is_an_error():
    with pytest.raises(RuntimeError, match="no validation result"):
        NniReporter().report_final()
