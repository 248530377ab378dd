"""Batched tile reading: whole rows of tiles per ``read_region``, cut in worker processes.

A :class:`TileDataset` item is one encoder batch of consecutive tiles (row-major
order). Its worker groups the batch's tiles into runs along a grid row, reads
each run as one region at the chosen pyramid level, cuts the tiles out and
resizes them to the output size. Each worker opens its own OpenSlide handle.
Memory is bounded by batch size x prefetch x workers, whatever the slide size.

Every tile equals ``resize_tile(slide.read_region((x, y), level, (r, r)), size)``
pixel for pixel on levels with an integer downsample (openslide interpolates
sub-pixel offsets on levels with a fractional one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, get_worker_info

from pipeline.wsi.slide import Slide

# A run of tiles read in one region spans at most this many tiles, and a gap of
# more than MAX_GAP tile widths between two kept tiles starts a new run (reading
# a gap decodes pixels nobody uses, while one more read_region call costs little).
MAX_RUN = 16
MAX_GAP = 0
# Workers yield the CPU to the encoder's threads: on a CPU-only machine they
# decode in the gaps instead of stalling the model's parallel regions.
WORKER_NICE = 5


def resize_tile(rgb: np.ndarray, size: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize an RGB uint8 tile to ``size`` x ``size`` with PIL (antialiased when shrinking)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), resample=resample))


def runs(xs: np.ndarray, ys: np.ndarray, read0: float, max_run: int = MAX_RUN, max_gap: int = MAX_GAP) -> list[tuple[int, int]]:
    """Split tiles (in row-major order) into [start, stop) runs that share a row and lie close together."""
    out: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(xs) + 1):
        if (
            i == len(xs)
            or ys[i] != ys[start]
            or xs[i] - xs[i - 1] > (1 + max_gap) * read0
            or i - start >= max_run
        ):
            out.append((start, i))
            start = i
    return out


class TileDataset(Dataset):
    """Batches of tiles of one slide; item ``i`` is ``(uint8 (n, s, s, 3), int64 tile indices)``.

    Parameters
    ----------
    path, mpp
        The slide and its level-0 mpp (so workers do not need the metadata).
    xs, ys
        Level-0 top-left corners of the tiles, row-major.
    level, read_size
        Pyramid level read and tile side in that level's pixels.
    out_size
        Tile side after resizing (the encoder's input).
    batch_size
        Tiles per item.
    resample
        PIL resampling filter.
    """

    def __init__(
        self,
        path: str | Path,
        mpp: float,
        xs: np.ndarray,
        ys: np.ndarray,
        level: int,
        read_size: int,
        out_size: int,
        batch_size: int = 32,
        resample: int = Image.BICUBIC,
        downsample: float = 1.0,
    ) -> None:
        self.path = str(path)
        self.mpp = float(mpp)
        self.xs = np.asarray(xs, dtype=np.int64)
        self.ys = np.asarray(ys, dtype=np.int64)
        self.level = int(level)
        self.read_size = int(read_size)
        self.out_size = int(out_size)
        self.batch_size = int(batch_size)
        self.resample = int(resample)
        self.downsample = float(downsample)
        self._slide: Slide | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return (len(self.xs) + self.batch_size - 1) // self.batch_size

    def open(self) -> Slide:
        """This process's own slide handle (opened on first use; a forked copy is never reused)."""
        if self._slide is None or self._pid != os.getpid():
            self._slide = Slide(self.path, mpp=self.mpp)
            self._pid = os.getpid()
        return self._slide

    def close(self) -> None:
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_slide"], state["_pid"] = None, None
        return state

    def read_batch(self, start: int, stop: int) -> np.ndarray:
        """Tiles ``start:stop`` as uint8 (n, out, out, 3)."""
        slide = self.open()
        xs, ys = self.xs[start:stop], self.ys[start:stop]
        r, ds = self.read_size, self.downsample
        out = np.empty((stop - start, self.out_size, self.out_size, 3), dtype=np.uint8)
        for a, b in runs(xs, ys, r * ds):
            offsets = np.rint((xs[a:b] - xs[a]) / ds).astype(np.int64)
            width = int(offsets[-1]) + r
            region = slide.read_image((int(xs[a]), int(ys[a])), self.level, (width, r))
            for k, off in enumerate(offsets):
                tile = region.crop((int(off), 0, int(off) + r, r))
                if r != self.out_size:
                    tile = tile.resize((self.out_size, self.out_size), resample=self.resample)
                out[a + k] = np.asarray(tile)
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = i * self.batch_size
        stop = min(start + self.batch_size, len(self.xs))
        return torch.from_numpy(self.read_batch(start, stop)), torch.arange(start, stop, dtype=torch.int64)


def _worker_init(_: int) -> None:
    try:
        os.nice(WORKER_NICE)
    except OSError:  # pragma: no cover (not permitted here): run at normal priority
        pass
    info = get_worker_info()
    if info is not None:
        info.dataset.open()  # type: ignore[union-attr]


def tile_loader(dataset: TileDataset, num_workers: int = 2, pin_memory: bool = False, prefetch: int = 2) -> DataLoader:
    """A DataLoader over a :class:`TileDataset`, in order, one batch per item."""
    kwargs = {"prefetch_factor": prefetch, "worker_init_fn": _worker_init} if num_workers > 0 else {}
    return DataLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        **kwargs,
    )


def iter_tiles(dataset: TileDataset, num_workers: int = 2, pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches in order; closes the in-process handle when done."""
    try:
        yield from tile_loader(dataset, num_workers, pin_memory)
    finally:
        dataset.close()
