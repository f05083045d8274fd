"""Rehearsals: an untrusted input model runs first in a contained worker, on exactly the
inputs that optimize, quantize and --auto then feed it in this process.

ONNX Runtime on the same model and the same inputs takes the same paths, so a hang or an
allocation bomb on those inputs is caught in the worker (see docs/security.md)."""

from __future__ import annotations

import os


def probe_untrusted_model(
    model_path: str | os.PathLike[str],
    feeds: dict,
    *,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    custom_op_library: str | None = None,
    timeout_s: float | None = None,
) -> None:
    """Load and run an untrusted model once, on ``feeds``, in a contained worker (see
    :mod:`onnxkit.runtime.contained`): a crash, a hang past ``timeout_s`` or an allocation past
    the memory limit is one clean error instead of the end of onnxkit (or the machine)."""
    from onnxkit.runtime.contained import ContainedSession

    with ContainedSession(model_path, providers=providers, provider_options=provider_options,
                          custom_op_library=custom_op_library, timeout_s=timeout_s) as sess:
        sess.run(feeds)


# The inputs optimize/quantize/autotune generate to validate and time a model
# (optimize.validate_pair and latency_feeds): the rehearsal uses the very same ones.
_MEASURE_BATCHES = (1, 4)
_MEASURE_SEQS = (16, 32)


def probe_model_file(model_path: str | os.PathLike[str], model: object | None = None, *, data: object | None = None,
                     extra: list[dict] | None = None, timeout_s: float | None = None) -> None:
    """Rehearse an untrusted input model before optimize/quantize/autotune run it in-process:
    one contained worker runs it on the seeded random inputs those commands validate and time
    with (and on every batch of ``data``, an open DataSource, when they use one). ONNX Runtime
    on the same model and inputs takes the same paths, so a hang or an allocation bomb on
    those inputs is caught here. ``model``: the already-parsed graph, to avoid parsing again."""
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.foundation.data import feeds_rows, random_feeds
    from onnxkit.foundation.spec import specs_from_onnx
    from onnxkit.operations.validate import input_sets

    if model is None:
        import onnx

        model = onnx.load(os.fspath(model_path), load_external_data=False)
    specs = specs_from_onnx(model)
    with ContainedSession(model_path, timeout_s=timeout_s) as sess:
        sess.run(random_feeds(specs, batch=1, seq=32, seed=0), where="random inputs (batch 1, seq 32)")  # latency feeds
        for label, feeds in input_sets(specs, batch_sizes=_MEASURE_BATCHES, seq_lens=_MEASURE_SEQS):
            sess.run(feeds, where=label.replace("random batch=", "random inputs, batch "))
        for feeds in extra or []:
            sess.run(feeds, where="random timing inputs")
        if data is not None:
            if isinstance(data, (str, os.PathLike)):
                from onnxkit.foundation.data import open_data

                data = open_data(data, specs)
            start = 1
            for label, feeds in input_sets(specs, data=data, batch_sizes=_MEASURE_BATCHES):
                rows = feeds_rows(feeds) or 1
                sess.run(feeds, where=f"{label} (rows {start}-{start + rows - 1})")
                start += rows
