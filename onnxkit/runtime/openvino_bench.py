"""``bench --provider openvino``: the OpenVINO runtime timed beside ONNX Runtime CPU.

The benchmark loop times ``session.session.run(output_names, feeds)`` of an
:class:`~onnxkit.runtime.session.OnnxSession`; :class:`OpenVinoBenchSession` gives an
OpenVINO compiled model that shape, so both runtimes are timed by the same interleaved loop
on the same inputs. Outputs are copied out of OpenVINO on every call (its default), as
ONNX Runtime returns fresh arrays: neither side is timed without its copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from onnxkit.runtime.session import OnnxSession

# A rehearsal compiles the model and runs each batch size once; OpenVINO's compile is slow.
_REHEARSAL_TIMEOUT_S = 600.0


class _InferCall:
    """``run(output_names, feeds)`` over one OpenVINO infer request, as ORT's session has it."""

    def __init__(self, ov_session: Any) -> None:
        self.request = ov_session.compiled.create_infer_request()
        self.outputs = list(ov_session.compiled.outputs)

    def run(self, names: list[str] | None, feeds: dict) -> list:
        result = self.request.infer(feeds)
        return [result[o] for o in self.outputs]


class OpenVinoBenchSession(OnnxSession):
    """An OpenVINO compiled model, timed by bench like an ONNX Runtime session."""

    def __init__(self, ov_session: Any) -> None:
        super().__init__(session=_InferCall(ov_session), providers=list(ov_session.providers),
                         input_specs=ov_session.input_specs, output_names=list(ov_session.output_names),
                         path=Path(ov_session.path))
        self.ov = ov_session
        self.precision = ov_session.precision

    def run(self, feeds: dict, outputs: list[str] | None = None) -> dict:
        return self.ov.run(feeds)

    def node_providers(self) -> dict[str, int] | None:
        if "node_providers" not in self.options:
            self.options["node_providers"] = self.ov.node_providers()
        return self.options["node_providers"]

    def close(self) -> None:
        self.ov.close()


def _rehearse_all(model_path: str, feeds: list[dict], precision: str | None) -> None:
    from onnxkit.runtime import targets_openvino

    got = targets_openvino.run(model_path, feeds, precision, {})
    if got["error"]:
        from onnxkit.runtime.openvino_session import rehearsal_error

        raise rehearsal_error(got)


def open_for_bench(model: str | os.PathLike[str], feeds_by_batch: dict[int, dict], *, trust: bool,
                   precision: str | None, threads: int | None) -> OpenVinoBenchSession:
    """The model compiled by OpenVINO for timing; an untrusted one first runs every timed
    batch once in a contained child (a crash or hang there is one clean error)."""
    from onnxkit.runtime.openvino_session import OpenVinoSession

    if not trust:
        from onnxkit.foundation.sandbox import run_isolated

        from onnxkit.runtime.contained import default_memory_mb

        run_isolated(_rehearse_all, os.fspath(model), [feeds_by_batch[b] for b in sorted(feeds_by_batch)], precision,
                     timeout_s=_REHEARSAL_TIMEOUT_S, memory_mb=default_memory_mb(),
                     what=f"model {Path(model).name} on OpenVINO")
    return OpenVinoBenchSession(OpenVinoSession(model, precision=precision, threads=threads))
