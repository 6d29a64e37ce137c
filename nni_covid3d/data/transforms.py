"""MONAI preprocessing: load, intensity window, resize, slice resampling, augmentation, caching.

Pipeline per scan (dictionary transforms on ``{"paths", "label", ...}``):

1. deterministic, cacheable: :class:`LoadScand` (decode to axial ``[1, D0, H0, W0]``),
   :class:`WindowIntensityd` (HU window or 0-255 gray range -> [0, 1] via ``ScaleIntensityRange``),
   ``Resized`` in-plane to ``H x W`` (``area``: anti-aliased downsampling), ``EnsureTyped``;
2. per access: :class:`DepthSampled` (eval: deterministic, centred bins) or :class:`RandDepthSampled`
   (train: random, order-preserving) to ``D`` slices; train-time in-plane ``RandFlipd`` / ``RandAffined``
   (:class:`InPlaned`), ``RandScaleIntensityd`` / ``RandShiftIntensityd`` — unless ``augment_on`` is
   ``"device"``: the same augmentation then runs on whole batches on the training device
   (:mod:`nni_covid3d.data.batch_augment`, applied by the training module).

Only stage 1 is cached (on disk with ``PersistentDataset`` under a folder named by the hash of the
stage-1 settings, or in memory with ``CacheDataset``), so augmentation stays random per epoch and a
changed setting never serves stale tensors. ``ScanDataset.cache_on`` keeps stage 1 in the training
device's memory (``--loader device``: MONAI's ``ToDeviced``), over whichever of those caches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import warnings
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import PersistentDataset
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    Randomizable,
    RandAffined,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Resized,
    ScaleIntensityRange,
)
from monai.utils import convert_to_tensor

from nni_covid3d.atomic import atomic_write_bytes
from nni_covid3d.data.io import read_scan
from nni_covid3d.data.records import DataError, Scan
from nni_covid3d.devices import AUGMENT_ON

__all__ = [
    "Preprocessing",
    "LoadScand",
    "WindowIntensityd",
    "DepthSampled",
    "RandDepthSampled",
    "InPlaned",
    "ScanDataset",
    "make_dataset",
    "preprocess_single",
    "scan_item",
    "depth_indices",
]

#: Bumped when stage-1 output changes for the same settings (invalidates old caches).
CACHE_VERSION = 1


@dataclass
class Preprocessing:
    """Preprocessing settings; the output of :func:`make_dataset` is ``FloatTensor[1, depth, height, width]``.

    Defaults follow the paper's search stage (16 x 64 x 64); :meth:`retrain` gives 32 x 128 x 128.
    """

    depth: int = 16
    height: int = 64
    width: int = 64
    hu_window: tuple[float, float] = (-1200.0, 600.0)  # lung window for HU data (NIfTI, DICOM, TIFF)
    gray_range: tuple[float, float] = (0.0, 255.0)  # 8-bit PNG/JPG slices, already windowed
    augment: bool = True  # train-time augmentation (never applied in eval)
    augment_on: str = "loader"  # where it runs: "loader" (per volume) or "device" (per batch, batch_augment.py)
    flip_prob: float = 0.5  # left-right flip
    affine_prob: float = 0.5
    rotate_degrees: float = 10.0  # in-plane rotation range (+/-)
    scale_range: float = 0.1  # in-plane zoom range (+/-)
    translate_fraction: float = 0.05  # in-plane shift range, fraction of H/W
    intensity_prob: float = 0.5
    intensity_scale: float = 0.1  # multiplicative intensity jitter (+/-)
    intensity_shift: float = 0.05  # additive intensity jitter (+/-)

    def __post_init__(self) -> None:
        self.hu_window = tuple(float(v) for v in self.hu_window)  # type: ignore[assignment]
        self.gray_range = tuple(float(v) for v in self.gray_range)  # type: ignore[assignment]
        if self.augment_on not in AUGMENT_ON:
            raise ValueError(f"Preprocessing.augment_on must be one of {', '.join(AUGMENT_ON)}, got {self.augment_on!r}")
        for name in ("depth", "height", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Preprocessing.{name} must be >= 1, got {getattr(self, name)}")
        if self.hu_window[0] >= self.hu_window[1] or self.gray_range[0] >= self.gray_range[1]:
            raise ValueError(f"windows must be (low, high) with low < high: hu_window={self.hu_window}, gray_range={self.gray_range}")

    @classmethod
    def search(cls, **overrides: Any) -> "Preprocessing":
        """The paper's search-stage input: 16 x 64 x 64."""
        return cls(**{"depth": 16, "height": 64, "width": 64, **overrides})

    @classmethod
    def retrain(cls, **overrides: Any) -> "Preprocessing":
        """The paper's retraining input: 32 x 128 x 128."""
        return cls(**{"depth": 32, "height": 128, "width": 128, **overrides})

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Output shape ``(C, D, H, W)``."""
        return (1, self.depth, self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hu_window"] = list(self.hu_window)
        out["gray_range"] = list(self.gray_range)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing setting(s) {sorted(unknown)}")
        return cls(**dict(data))

    def cache_key(self) -> str:
        """Hash of the settings that shape the cached (deterministic) stage."""
        cached = {"v": CACHE_VERSION, "h": self.height, "w": self.width, "hu": list(self.hu_window), "gray": list(self.gray_range)}
        return hashlib.sha1(json.dumps(cached, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------- transforms
class LoadScand(MapTransform):
    """Decode ``data["paths"]`` (slice files, one NIfTI, or a DICOM folder) to ``data["image"]``:
    float32 ``[1, D, H, W]`` with axial slices on D, and ``data["kind"]`` ("hu" or "gray8")."""

    def __init__(self, keys: KeysCollection = "paths", output_key: str = "image"):
        super().__init__(keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            volume, kind = read_scan([Path(p) for p in d[key]])
            d[self.output_key] = volume[None]
            d["kind"] = kind
        return d


class WindowIntensityd(MapTransform):
    """Scale intensities to [0, 1] with MONAI ``ScaleIntensityRange``: the HU window for ``kind == "hu"``,
    the gray range for ``kind == "gray8"``; values outside are clipped."""

    def __init__(self, keys: KeysCollection, hu_window: Sequence[float], gray_range: Sequence[float]):
        super().__init__(keys)
        self.scalers = {
            "hu": ScaleIntensityRange(a_min=hu_window[0], a_max=hu_window[1], b_min=0.0, b_max=1.0, clip=True),
            "gray8": ScaleIntensityRange(a_min=gray_range[0], a_max=gray_range[1], b_min=0.0, b_max=1.0, clip=True),
        }

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scalers[d["kind"]](d[key])
        return d


def depth_indices(num_slices: int, depth: int, offsets: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``depth`` slices out of ``num_slices``, one per equal-width bin, in order.

    ``offsets`` in [0, 1) pick the position inside each bin (train: random); ``None`` takes each
    bin's centre (eval). Fewer slices than ``depth`` repeat slices, still in order.
    """
    positions = (np.arange(depth) + (0.5 if offsets is None else offsets)) * (num_slices / depth)
    return np.clip(np.floor(positions).astype(np.int64), 0, num_slices - 1)


class DepthSampled(MapTransform):
    """Deterministic, centred slice resampling to a fixed depth (eval)."""

    def __init__(self, keys: KeysCollection, depth: int):
        super().__init__(keys)
        self.depth = depth

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key][:, torch.as_tensor(depth_indices(d[key].shape[1], self.depth))]
        return d


class RandDepthSampled(Randomizable, MapTransform):
    """Random, order-preserving slice resampling to a fixed depth (train): one random slice per bin."""

    def __init__(self, keys: KeysCollection, depth: int):
        MapTransform.__init__(self, keys)
        self.depth = depth
        self._offsets = np.full(depth, 0.5)

    def randomize(self, data: Any = None) -> None:
        self._offsets = self.R.uniform(0.0, 1.0, self.depth)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = d[key][:, torch.as_tensor(depth_indices(d[key].shape[1], self.depth, self._offsets))]
        return d


class InPlaned(Randomizable, MapTransform):
    """Apply 2D dictionary transforms to all axial slices of ``[C, D, H, W]`` at once, the slices acting
    as channels: one in-plane flip/rotation/zoom per scan, and no interpolation across slices (which are
    up to 10 mm apart), at the cost of 2D rather than 3D resampling."""

    def __init__(self, keys: KeysCollection, transform: Compose):
        MapTransform.__init__(self, keys)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> "InPlaned":
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # the wrapped transforms draw their own parameters
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            c, depth, height, width = image.shape
            out = self.transform({key: image.reshape(c * depth, height, width)})[key]
            d[key] = torch.as_tensor(out).reshape(c, depth, *out.shape[-2:])
        return d


def cached_transforms(preprocessing: Preprocessing) -> Compose:
    """Stage 1 (deterministic): decode, window, resize in-plane -> FloatTensor ``[1, D0, H, W]``."""
    p = preprocessing
    return Compose(
        [
            LoadScand("paths"),
            WindowIntensityd("image", p.hu_window, p.gray_range),
            Resized("image", spatial_size=(-1, p.height, p.width), mode="area"),
            EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False),
        ]
    )


def per_access_transforms(preprocessing: Preprocessing, *, train: bool) -> Compose:
    """Stage 2 (after the cache): depth resampling and, when training, augmentation (unless it runs on
    the device: ``augment_on="device"``)."""
    p = preprocessing
    steps: list = [RandDepthSampled("image", p.depth) if train else DepthSampled("image", p.depth)]
    if train and p.augment and p.augment_on == "loader":
        in_plane = Compose(
            [
                RandFlipd("image", prob=p.flip_prob, spatial_axis=1),  # left-right
                RandAffined(
                    "image",
                    prob=p.affine_prob,
                    rotate_range=(math.radians(p.rotate_degrees),),
                    scale_range=(p.scale_range, p.scale_range),
                    translate_range=(p.translate_fraction * p.height, p.translate_fraction * p.width),
                    mode="bilinear",
                    padding_mode="border",
                    spatial_size=(p.height, p.width),
                    cache_grid=True,  # the base sampling grid is the same for every scan
                ),
            ]
        )
        steps += [
            InPlaned("image", in_plane),
            RandScaleIntensityd("image", factors=p.intensity_scale, prob=p.intensity_prob),
            RandShiftIntensityd("image", offsets=p.intensity_shift, prob=p.intensity_prob),
        ]
    steps.append(EnsureTyped("image", data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)


def _surface_data_errors(step):
    """Run ``step()``; MONAI wraps transform errors as "applying transform ...": re-raise the
    :class:`DataError` (naming the file) found in the cause chain instead."""
    try:
        return step()
    except RuntimeError as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, DataError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from error


def _file_stamp(paths: Sequence[Path]) -> str:
    """Size and mtime of the scan's files, so an edited file never hits a stale cache entry."""
    h = hashlib.sha1()
    for path in paths:
        try:
            stat = Path(path).stat()
            h.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns};".encode())
        except OSError:
            h.update(f"{path}|missing;".encode())
    return h.hexdigest()


def scan_item(scan: Scan) -> dict[str, Any]:
    """The dictionary a scan enters the MONAI pipeline as."""
    paths = [str(p) for p in scan.paths]
    return {"paths": paths, "label": int(scan.label), "scan": f"{scan.dataset}:{scan.key}", "stamp": _file_stamp(scan.paths)}


class ScanDataset(torch.utils.data.Dataset):
    """Scans -> ``{"image": FloatTensor[1, D, H, W], "label": int, "scan": str}``.

    ``base`` yields stage-1 output (possibly cached); ``post`` runs per access. Each DataLoader
    worker seeds ``post`` from its own seed.
    """

    def __init__(self, scans: Sequence[Scan], base: torch.utils.data.Dataset, post: Compose):
        self.scans = list(scans)
        self.base = base
        self.post = post
        self._worker_seed: int | None = None
        self.cached_on: torch.device | None = None

    def cache_on(self, device: torch.device | str) -> None:
        """Hold every stage-1 volume in ``device``'s memory from now on (MONAI's ``CacheDataset`` over
        this dataset's source, with ``ToDeviced``), filled now; the per-access steps then run there.
        Only for loading in the training process: worker processes cannot share device memory."""
        from monai.data import CacheDataset
        from monai.transforms import ToDeviced

        device = torch.device(device)
        if self.cached_on == device:
            return
        self.base = _surface_data_errors(lambda: CacheDataset(
            self.base, transform=Compose([ToDeviced("image", device=device)]), progress=False))
        self.cached_on = device

    def __len__(self) -> int:
        return len(self.scans)

    def set_random_state(self, seed: int) -> None:
        """Seed the random transforms (``nni_covid3d.training.resume`` reseeds them every epoch)."""
        self.post.set_random_state(seed=seed)

    def _reseed_in_worker(self) -> None:
        """In a DataLoader worker, seed the random transforms from the worker's seed once, so that
        workers forked with the same state do not repeat each other's augmentations (also with a
        plain ``torch.utils.data.DataLoader``)."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.post.set_random_state(seed=info.seed % (2**32))
            self._worker_seed = info.seed

    def __getitem__(self, index: int) -> dict[str, Any]:
        self._reseed_in_worker()
        item = _surface_data_errors(lambda: self.post(self.base[index]))
        return {"image": item["image"], "label": int(item["label"]), "scan": item["scan"]}

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.scans]


class _AtomicPersistentDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` with cache entries written atomically in the cache folder (MONAI
    moves them from the system's temporary folder: a copy, cut by a crash, when that folder lies on
    another file system); an unreadable entry is recomputed."""

    def _entry(self, item: Mapping[str, Any]) -> Path:
        return Path(self.cache_dir) / f"{self.hash_func(item).decode('utf-8')}{self.transform_hash}.pt"

    def warm(self, progress: bool) -> int:
        """Compute the entries not cached yet (a progress bar when ``progress``); returns how many."""
        from tqdm.auto import tqdm

        missing = [item for item in self.data if not self._entry(item).is_file()]
        for item in tqdm(missing, desc=f"caching {len(missing)} of {len(self.data)} scans", disable=not progress,
                         unit="scan", leave=False):
            self._cachecheck(item)
        return len(missing)

    def _cachecheck(self, item_transformed):
        entry = self._entry(item_transformed)
        if entry.is_file():
            try:
                return torch.load(entry, weights_only=True)
            except Exception as error:  # a cut or damaged entry fails in many ways
                warnings.warn(f"{entry}: unreadable cache entry ({type(error).__name__}); recomputing it")
        item = self._pre_transform(deepcopy(item_transformed))
        buffer = io.BytesIO()
        torch.save(convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta), buffer)
        atomic_write_bytes(entry, buffer.getbuffer())
        return item


def make_dataset(
    scans: Sequence[Scan],
    preprocessing: Preprocessing,
    *,
    train: bool,
    cache_dir: Path | str | None = None,
    cache_in_memory: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> ScanDataset:
    """A torch Dataset over scans, yielding ``{"image": FloatTensor[1, D, H, W], "label": int, "scan": str}``.

    Args:
        scans: the scans (e.g. one split).
        preprocessing: settings; the cache is keyed on their hash.
        train: random depth sampling and augmentation (``True``) or deterministic centred sampling.
        cache_dir: cache decoded, windowed, resized volumes on disk here (MONAI ``PersistentDataset``,
            in a sub-folder per settings hash).
        cache_in_memory: cache them in memory instead (MONAI ``CacheDataset``), when no ``cache_dir``.
        seed: seed of the random transforms.
        progress: fill the cache now, with a progress bar (otherwise the first epoch fills it).
    """
    from monai.data import CacheDataset, Dataset

    items = [scan_item(s) for s in scans]
    stage1 = cached_transforms(preprocessing)
    if cache_dir is not None:
        folder = Path(cache_dir) / f"prep-{preprocessing.cache_key()}"
        folder.mkdir(parents=True, exist_ok=True)
        base = _AtomicPersistentDataset(items, transform=stage1, cache_dir=folder)
        if progress:
            base.warm(progress=True)
    elif cache_in_memory:
        base = CacheDataset(items, transform=stage1, num_workers=0, progress=progress)
    else:
        base = Dataset(items, transform=stage1)
    post = per_access_transforms(preprocessing, train=train)
    post.set_random_state(seed=seed)
    return ScanDataset(scans, base, post)


def preprocess_single(scan: Scan, preprocessing: Preprocessing) -> torch.Tensor:
    """Eval-mode preprocessing of one scan: ``FloatTensor[1, D, H, W]``."""
    item = _surface_data_errors(lambda: cached_transforms(preprocessing)(scan_item(scan)))
    return per_access_transforms(preprocessing, train=False)(item)["image"]
