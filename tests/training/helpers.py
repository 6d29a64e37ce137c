"""Small synthetic datasets and a tiny model for training tests."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

CLASSES = ["CP", "NCP", "Normal"]


class BlobVolumes(Dataset):
    """``n`` volumes ``[1, 8, 16, 16]`` whose mean intensity encodes the class (easy to learn)."""

    def __init__(self, n: int = 12, seed: int = 0, num_classes: int = 3, labels: list[int] | None = None):
        generator = torch.Generator().manual_seed(seed)
        self.labels = labels if labels is not None else [i % num_classes for i in range(n)]
        y = torch.tensor(self.labels, dtype=torch.float32)
        self.images = torch.randn(len(self.labels), 1, 8, 16, 16, generator=generator) * 0.5 + y.view(-1, 1, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}


class SpyDataset(Dataset):
    """Wraps a dataset and appends ``(name, index)`` to a shared ``log`` on every item read."""

    def __init__(self, inner: Dataset, name: str, log: list):
        self.inner, self.name, self.log = inner, name, log

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict:
        self.log.append((self.name, index))
        return self.inner[index]

    @property
    def labels(self) -> list[int]:
        """Labels without reading items (as ``ScanDataset.labels``)."""
        return list(self.inner.labels)


# A tiny architecture of the real CovidNet3D space (thousands of parameters): fast to train in tests.
TINY_SPACE = dict(
    preset="S", widths=[8, 8, 16, 16, 16, 16], n_cells=[1, 1, 1, 1, 1, 1], stem_channels=8,
    first_block_channels=8, head_channels=32, candidates=["mbconv_k3_e3", "skip"], dropout=0.0,
)


def tiny_arch(seed: int = 0) -> dict:
    from nni_covid3d.search_spaces import random_architecture

    arch = random_architecture(TINY_SPACE, seed)
    arch["choices"] = {label: "mbconv_k3_e3" for label in arch["choices"]}
    return arch
