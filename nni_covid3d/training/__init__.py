"""Training and evaluation: the Lightning module (also NNI's evaluator), checkpoints, pipelines."""
from nni_covid3d.training.checkpoint import CheckpointError, load_model, read_checkpoint
from nni_covid3d.training.module import CovidClassifier, load_classifier, unpack_batch

__all__ = [
    "CovidClassifier",
    "unpack_batch",
    "CheckpointError",
    "read_checkpoint",
    "load_model",
    "load_classifier",
]
