"""Calibration batches for static quantization, fed to ONNX Runtime's calibrator."""

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


def _calibration_reader(batches: _Batches) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        # Streams: only one batch is in memory at a time.
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.it, None)

        def rewind(self) -> None:
            self.it = iter(batches)

    return Reader()
