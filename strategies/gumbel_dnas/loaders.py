"""Training data of a search split into the weight part and the architecture part."""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader
from torch.utils.data import DataLoader, RandomSampler, Subset

from nni_covid3d.data.loading import drop_remainder

__all__ = ["ArchSplit", "arch_indices", "split_train_loader"]

#: Data for the architecture steps: a fraction of the training samples, dataset indices, or "val".
ArchSplit = float | Sequence[int] | Literal["val"]


def arch_indices(n: int, arch_split: float | Sequence[int], seed: int) -> list[int]:
    """Dataset indices of the architecture part: a seeded ``arch_split`` fraction of ``n``, or the given indices."""
    if isinstance(arch_split, float):
        n_arch = min(n - 1, max(1, round(arch_split * n)))
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_arch].tolist()
    return list(arch_split)


def split_train_loader(loader: DataLoader, arch_indices: Sequence[int]) -> tuple[DataLoader, DataLoader]:
    """Split ``loader``'s dataset into (weight loader, arch loader) by dataset index.

    Both loaders copy ``loader``'s batch size, shuffling, workers, prefetch and collate function, and
    share its seeded generator (which ``ResumableRun`` reseeds every epoch). They are PyTorch loaders
    whatever ``loader``'s class: a background-thread loader (MONAI's ``ThreadDataLoader``) would draw
    the two shuffles from the shared generator in racing order, and the search would not repeat.
    """
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(
            "GumbelDNAS splits the training DataLoader into weight and architecture parts; it needs a "
            f"torch DataLoader with a batch_size, got {type(loader).__name__}. Pass arch_split='val' to use "
            "the evaluator's validation loader for architecture steps instead."
        )
    n = len(loader.dataset)  # type: ignore[arg-type]
    arch = sorted({int(i) for i in arch_indices})
    if not arch or arch[0] < 0 or arch[-1] >= n:
        raise ValueError(f"architecture indices must be a non-empty subset of range({n})")
    arch_set = set(arch)
    weight = [i for i in range(n) if i not in arch_set]
    if not weight:
        raise ValueError("the architecture part takes every training sample; nothing left for the weights")
    shuffle = isinstance(loader.sampler, RandomSampler)

    def make(indices: list[int]) -> DataLoader:
        with_workers = {"persistent_workers": loader.persistent_workers,
                        "prefetch_factor": loader.prefetch_factor} if loader.num_workers > 0 else {}
        return TracedDataLoader(
            Subset(loader.dataset, indices), batch_size=loader.batch_size, shuffle=shuffle,
            num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
            drop_last=loader.drop_last and drop_remainder(len(indices), loader.batch_size),
            worker_init_fn=loader.worker_init_fn, generator=loader.generator, **with_workers,
        )

    return make(weight), make(arch)
