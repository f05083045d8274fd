"""Calibration batches for static quantization, fed to ONNX Runtime's calibrator.

ONNX Runtime's calibrators keep what they collect for every batch until the reader runs dry:
the entropy and percentile ones every intermediate tensor of every batch (64 batches of
MiniLM at 8 x 128: gigabytes), MinMax a min and max per tensor per batch. Given
``CalibStridedMinMax`` (any calibrator, despite the name) and a reader with ``len`` and
``set_range``, quantize_static instead collects one stride at a time and merges the result
(min/max, or the histograms) before the next, so peak memory follows one batch, not the
number of batches. ``CalibMaxIntermediateOutputs``, the documented way, is not used: in
ONNX Runtime 1.32 it drops the batches collected so far instead of merging them.

MinMax ranges come out identical; percentile ones within 0.1%. Entropy histograms are merged
batch by batch (re-binned as the range grows), so their thresholds differ from one histogram
of everything (scales up to 17% apart on a small CNN); the accuracy budget is measured on the
result either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class _Batches:
    """Re-iterable batches: the user's data streamed from disk, or seeded random feeds."""

    def __init__(self, specs: list, *, data_path: str | None = None, random_n: int = 0, batch: int = 8, seed: int = 0) -> None:
        # absolute: the quantizers read batches while the working directory is elsewhere
        self.data_path = os.path.abspath(data_path) if data_path else None
        self.specs, self.random_n, self.seed = specs, random_n, seed
        fixed = [s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)]
        self.batch = fixed[0] if fixed else batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from onnxkit.foundation.data import check_feeds, open_data, random_feeds

        if self.data_path:
            for i, feeds in enumerate(open_data(self.data_path, self.specs).batches(self.batch)):
                yield check_feeds(feeds, self.specs, where=f"{Path(self.data_path).name} batch {i}")
        else:
            left, i = self.random_n, 0
            while left > 0:
                b = min(self.batch, left)
                yield random_feeds(self.specs, batch=b, seq=16, seed=self.seed + i)
                left -= b
                i += 1


    def count(self) -> int:
        """The number of batches, by streaming through the data once (nothing kept)."""
        from onnxkit.foundation.data import open_data

        if not self.data_path:
            return -(-self.random_n // self.batch)
        return sum(1 for _ in open_data(self.data_path, self.specs).batches(self.batch))


# Batches the calibrator collects before merging: one keeps its memory at one batch's tensors.
CALIBRATION_STRIDE = 1
# quantize_static's extra_options that make it collect stride by stride (see the module's docstring).
STREAMED_CALIBRATION = {"CalibStridedMinMax": CALIBRATION_STRIDE}


def _calibration_reader(batches: _Batches) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        # Streams: only one batch is in memory at a time. quantize_static asks for the
        # length, then for the ranges [0, 1), [1, 2), ... in order; a range behind the
        # current position restarts the stream.
        def __init__(self) -> None:
            self.it = iter(batches)
            self.pos, self.end = 0, None
            self._len: int | None = None

        def __len__(self) -> int:
            if self._len is None:
                self._len = batches.count()
            return self._len

        def set_range(self, start_index: int, end_index: int) -> None:
            if start_index < self.pos:
                self.rewind()
            while self.pos < start_index and next(self.it, None) is not None:
                self.pos += 1
            self.end = end_index

        def get_next(self) -> dict | None:
            if self.end is not None and self.pos >= self.end:
                return None
            feeds = next(self.it, None)
            if feeds is not None:
                self.pos += 1
            return feeds

        def rewind(self) -> None:
            self.it = iter(batches)
            self.pos, self.end = 0, None

    return Reader()
