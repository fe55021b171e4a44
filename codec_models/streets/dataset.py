"""The ``StreetsDataset``: splits rendered once, kept in memory and cached on disk under file locks.

Images and labels are cached as one ``.npy`` pair per (split, size, H, W, generator version);
instance maps (:meth:`StreetsDataset.instance_map`) have their own ``.npy`` file, keyed also by
``INSTANCE_VERSION`` and checked against the labels whenever it is loaded.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .render import DEFAULT_SIZES, GENERATOR_VERSION, SPLIT_OFFSET, render_split
from .trainids import IS_INSTANCE_CLASS

INSTANCE_VERSION = 1  # bump whenever the instance maps change with the images unchanged: it keys their cache


def default_cache_dir() -> Path:
    """``$RLASC_CACHE/streets`` if set, else ``~/.cache/rlasc/streets``."""
    env = os.environ.get("RLASC_CACHE")
    return Path(env) / "streets" if env else Path.home() / ".cache" / "rlasc" / "streets"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX flock); a no-op where unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache is shared by users of the folder
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StreetsDataset(Dataset):
    """Procedural street scenes: items ``(image float32 3xHxW in [0, 1], labels int64 HxW)``.

    Splits use disjoint seed ranges (``SPLIT_OFFSET``). All items are rendered once, on first
    access, and kept as uint8 arrays; with ``disk_cache`` they are also stored as a ``.npy``
    pair keyed by (split, size, H, W, GENERATOR_VERSION) and memory-mapped on later loads.
    Rendering runs under a file lock, so DataLoader workers or ranks render it only once.
    Instance maps (:meth:`instance_map`) are rendered and cached the same way, on first use.
    """

    def __init__(self, split: str = "train", height: int = 64, width: int = 128, size: int | None = None,
                 cache_dir: str | os.PathLike | None = None, disk_cache: bool = True, progress: bool = True) -> None:
        if split not in SPLIT_OFFSET:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLIT_OFFSET)}")
        size = DEFAULT_SIZES[split] if size is None else int(size)
        if size < 0 or size > SPLIT_OFFSET["val"]:
            raise ValueError(f"size must be in [0, {SPLIT_OFFSET['val']}], got {size}")
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        self.split, self.height, self.width, self.size = split, int(height), int(width), size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.disk_cache, self.progress = disk_cache, progress
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._instances: np.ndarray | None = None

    def __len__(self) -> int:
        return self.size

    @property
    def cache_paths(self) -> tuple[Path, Path]:
        """Paths of the cached images and labels."""
        stem = f"streets_v{GENERATOR_VERSION}_{self.split}_{self.size}_{self.height}x{self.width}"
        return self.cache_dir / f"{stem}_images.npy", self.cache_dir / f"{stem}_labels.npy"

    @property
    def instance_cache_path(self) -> Path:
        """Path of the cached instance maps."""
        stem = f"streets_v{GENERATOR_VERSION}_{self.split}_{self.size}_{self.height}x{self.width}"
        return self.cache_dir / f"{stem}_instances_i{INSTANCE_VERSION}.npy"

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All items as uint8 arrays (NxHxWx3, NxHxW), rendering or loading them if needed."""
        if self._images is None:
            self._images, self._labels = self._load_or_render()
        return self._images, self._labels

    def _load_or_render(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.disk_cache:
            return render_split(self.split, self.size, self.height, self.width, self.progress)
        img_path, lab_path = self.cache_paths
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.cache_dir / f"{img_path.name}.lock"):
            cached = self._read_cache()
            if cached is not None:
                return cached
            images, labels = render_split(self.split, self.size, self.height, self.width, self.progress)
            _save_atomic(lab_path, labels)
            _save_atomic(img_path, images)
            return images, labels

    def _read_cache(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Memory-mapped cached arrays, or None when missing or not of the expected shape."""
        img_path, lab_path = self.cache_paths
        if not (img_path.exists() and lab_path.exists()):
            return None
        try:
            images, labels = np.load(img_path, mmap_mode="r"), np.load(lab_path, mmap_mode="r")
        except (OSError, ValueError):
            return None
        shape = (self.size, self.height, self.width)
        if images.shape != (*shape, 3) or labels.shape != shape or images.dtype != np.uint8 or labels.dtype != np.uint8:
            return None
        return images, labels

    def instance_maps(self) -> np.ndarray:
        """All items' instance ids (int32 NxHxW, 0 = stuff), rendering or loading them if needed."""
        if self._instances is None:
            self._instances = self._load_or_render_instances()
        return self._instances

    def instance_map(self, index: int) -> np.ndarray:
        """Instance ids of item ``index`` (int32 HxW; 0 = stuff, 1..K objects), see ``render_street_scene``."""
        self._check_index(index)
        return np.array(self.instance_maps()[index])

    def _load_or_render_instances(self) -> np.ndarray:
        labels = self.arrays()[1]
        if not self.disk_cache:
            return self._render_instances(labels)
        path = self.instance_cache_path
        with _file_lock(self.cache_dir / f"{path.name}.lock"):
            if path.exists():
                instances, problem = self._read_instance_cache(labels)
                if instances is not None:
                    return instances
                warnings.warn(f"streets instance cache {path} is {problem}; rendering it again", stacklevel=3)
            instances = self._render_instances(labels)
            _save_atomic(path, instances)
            return instances

    def _render_instances(self, labels: np.ndarray) -> np.ndarray:
        """Render the split's instance maps, refusing them if the labels rendered alongside differ from ``labels``."""
        _, rendered, instances = render_split(self.split, self.size, self.height, self.width, self.progress,
                                              with_instances=True)
        if not np.array_equal(rendered, labels):
            source = self.cache_paths[1] if self.disk_cache else "memory"
            raise RuntimeError(f"the labels of streets/{self.split} ({source}) differ from what generator version "
                               f"{GENERATOR_VERSION} renders now; the image cache is stale: delete its files and "
                               "render it again")
        return instances

    def _read_instance_cache(self, labels: np.ndarray) -> tuple[np.ndarray | None, str]:
        """(memory-mapped cached instance maps, "") or (None, what is wrong with the file)."""
        path = self.instance_cache_path
        try:
            instances = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as err:
            return None, f"unreadable ({err})"
        if instances.shape != labels.shape or instances.dtype != np.int32:
            return None, f"of shape {instances.shape} {instances.dtype}, expected {labels.shape} int32"
        if not np.array_equal(instances > 0, IS_INSTANCE_CLASS[labels]):
            return None, "inconsistent with the labels (objects where the labels have stuff or the reverse)"
        return instances, ""

    def _check_index(self, index: int) -> None:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_index(index)
        images, labels = self.arrays()
        image = torch.from_numpy(np.array(images[index])).permute(2, 0, 1).float().div_(255.0)
        return image, torch.from_numpy(labels[index].astype(np.int64))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self.disk_cache:  # workers started with spawn re-open the memory-mapped cache
            state["_images"] = state["_labels"] = state["_instances"] = None
        return state
