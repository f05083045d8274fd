"""Does an exported graph run at sizes other than the ones it was traced with?

torch.export can mark an input dim dynamic and still bake the traced size into a Reshape
inside the graph (seen: nn.LSTM followed by nn.GRU, a Reshape to [7, -1, 32] with 7 the
traced sequence length). The graph's inputs look dynamic, so only running it tells."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from onnxkit._lazy import require
from onnxkit.errors import OnnxkitError
from onnxkit.foundation.data import concrete_shape
from onnxkit.foundation.spec import InputSpec

log = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]


def example_feeds(specs: list[InputSpec], batch: int, seq: int, *, seed: int = 0) -> Feeds:
    """Inputs at these sizes: seeded normals for floats, ones for the rest (a valid token id,
    a full attention mask, a true flag)."""
    rng = np.random.default_rng(seed)
    named: dict[str, int] = {}
    feeds: Feeds = {}
    for spec in specs:
        shape = concrete_shape(spec, batch, seq, named)
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.ones(shape, dtype=spec.dtype)
    return feeds


def baked_size_failure(model, specs: list[InputSpec], source_predict: Callable[[Feeds], Feeds],
                       batch: int, seq: int) -> str | None:
    """Why ``model`` fails at (batch, seq) where the source runs, or None (it runs, the
    source does not either, or no dim is dynamic)."""
    from onnxkit.runtime.session import make_session

    if all(isinstance(d, int) for s in specs for d in s.shape):
        return None
    feeds = example_feeds(specs, batch, seq, seed=1)
    try:
        source_predict(feeds)
    except Exception as exc:  # the source itself refuses these sizes: nothing to blame the graph for
        log.debug("source does not run at batch=%d seq=%d: %s", batch, seq, exc)
        return None
    try:
        session = make_session(model)
    except OnnxkitError as exc:  # not loadable at all: the checker and validation say why
        log.debug("exported graph does not load: %s", exc)
        return None
    # ONNX Runtime logs a failed run on stderr (in red) before raising; this trial run's failure
    # is expected and handled, so it must not reach the user's terminal.
    quiet = require("onnxruntime").RunOptions()
    quiet.log_severity_level = 4
    try:
        session.session.run(None, feeds, quiet)
    except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
        shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"the exported graph does not run at {shapes} where the model does ({first[:300]})"
    return None
