"""Silence what ONNX Runtime's Python tools print while they work.

onnxruntime.transformers prints shape-inference failures with ``print`` (on stdout, where
``--json`` needs onnxkit's document alone) and logs warnings through top-level module loggers
(``fusion_skiplayernorm``, ...) that no logger name of the ``onnxruntime`` tree reaches. onnxkit
turns each such failure into a note of its own, so the raw lines are noise; with ``--verbose``
they go to stderr as they are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def library_chatter() -> Iterator[None]:
    verbose = logging.getLogger("onnxkit").isEnabledFor(logging.DEBUG)
    if verbose:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    held = io.StringIO()
    before = logging.root.manager.disable
    logging.disable(max(before, logging.WARNING))
    try:
        with contextlib.redirect_stdout(held):
            yield
    finally:
        logging.disable(before)
