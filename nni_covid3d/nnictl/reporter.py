"""``NniReporter``: the Lightning callback through which every training and search reports to NNI.

Outside an NNI trial it only records the history, so the same Trainer runs alone or under nnictl.
Inside one, rank 0 reports ``{"default": val_acc, "val_bal_acc": ..., "val_loss": ...}`` after each
validation (``nni.report_intermediate_result``) and one final result: the last intermediate result
at the end of ``fit``, or, with ``final_at_fit_end=False``, when the caller has more to add
(:meth:`NniReporter.report_final`, e.g. the model size or the test scores).

Its history is part of a run's checkpoints: a resumed run (``search --resume``, a DNAS trial that
``nnictl resume`` reruns) continues it, and NNI's intermediate-result sequence with it.
"""
from __future__ import annotations

from typing import Any

import nni
import pytorch_lightning as pl

from nni_covid3d.nnictl.supervise import launched_by_nni as in_nni_trial

__all__ = ["NniReporter", "in_nni_trial"]

#: Logged metrics reported beside ``default`` when present.
EXTRA_KEYS = ("val_bal_acc", "val_loss")


class NniReporter(pl.Callback):
    """Report validation results to NNI.

    Args:
        metric: the logged metric reported as NNI's ``default`` (what tuners optimise).
        final_at_fit_end: report the final result when ``fit`` ends; ``False`` leaves it to
            :meth:`report_final`, so extra fields can join it.
    """

    def __init__(self, metric: str = "val_acc", *, final_at_fit_end: bool = True) -> None:
        self.metric = metric
        self.final_at_fit_end = final_at_fit_end
        self.history: list[dict[str, float]] = []
        self.final: dict[str, Any] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        if self.metric not in metrics:
            return
        entry = {"default": float(metrics[self.metric])}
        entry.update({key: float(metrics[key]) for key in EXTRA_KEYS if key in metrics and key != self.metric})
        self.history.append(entry)
        if in_nni_trial():
            nni.report_intermediate_result(entry)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from nni_covid3d.compat import continue_intermediate_sequence

        self.history = [dict(entry) for entry in state_dict.get("history", [])]
        continue_intermediate_sequence(len(self.history))  # results 0 .. n-1 went out before the resume

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.final_at_fit_end and trainer.is_global_zero and self.history:
            self.report_final()

    def report_final(self, **extra: Any) -> dict[str, Any]:
        """Report the last validation result plus ``extra`` as the final result (once); returns it.

        Raises ``RuntimeError`` when no validation ran (e.g. an empty validation split).
        """
        if not self.history:
            raise RuntimeError("training produced no validation result (is the validation split empty?)")
        if self.final is not None:
            raise RuntimeError("the final result was already reported")
        self.final = {**self.history[-1], **extra}
        if in_nni_trial():
            nni.report_final_result(self.final)
        return self.final
