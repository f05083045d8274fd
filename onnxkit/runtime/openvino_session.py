"""``run --provider openvino``: the OpenVINO runtime (the ``openvino`` package) behind the
session interface ``run`` uses (``run``, ``providers``, ``output_names``, ``node_providers``,
``close``, ``timeout_s``).

``onnxruntime-openvino`` replaces the ``onnxruntime`` module and cannot sit beside the pinned
onnxruntime, so when the installed ONNX Runtime has no OpenVINO provider, ``--provider
openvino`` means the OpenVINO runtime itself, reading the ONNX file directly. An untrusted
model is first read, compiled and run once on the first batch in a contained child process
(a crash or hang in OpenVINO's ONNX reader or compiler is then one clean error); the real run
is in-process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from onnxkit.errors import ConversionError, EnvironmentProblem, InputError, UsageError

PROVIDER_NAME = "OpenVINO (openvino package, CPU)"
_REHEARSAL_TIMEOUT_S = 600.0


def wanted(providers: list[str] | None) -> bool:
    """True when ``--provider openvino`` should go to the openvino package: it was asked for
    and this onnxruntime build has no OpenVINO execution provider."""
    if not providers or not any(p.strip().lower() in ("openvino", "openvinoexecutionprovider") for p in providers):
        return False
    from onnxkit.runtime.session import available_providers

    if "OpenVINOExecutionProvider" in available_providers():
        return False
    others = [p for p in providers if p.strip().lower() not in ("openvino", "openvinoexecutionprovider", "cpu")]
    if others:
        raise UsageError(f"--provider openvino runs the OpenVINO runtime on its own; it cannot be combined with {', '.join(others)}")
    return True


def _rehearse(model_path: str, feeds: dict, precision: str | None) -> None:
    from onnxkit.runtime import targets_openvino

    got = targets_openvino.run(model_path, [feeds], precision, {})
    if got["error"]:
        raise rehearsal_error(got)


def rehearsal_error(got: dict) -> Exception:
    """A model OpenVINO could not read or compile is a conversion failure (exit 4); one that
    compiled and then failed on its inputs (out of memory under the limit, a bad shape) is bad
    input (exit 2), as for ONNX Runtime's contained worker."""
    return InputError(got["error"]) if got["stage"] == "run" else ConversionError(got["error"])


class OpenVinoSession:
    def __init__(self, model: str | os.PathLike[str], *, precision: str | None = None, threads: int | None = None) -> None:
        from onnxkit.runtime.targets_openvino import DEVICE, HINTS, _error_text, availability, precision_name

        why = availability()
        if why:
            raise EnvironmentProblem(why)
        if precision is not None and precision not in HINTS:
            raise UsageError(f"unknown --precision {precision!r}; choose from {', '.join(HINTS)}")
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = HINTS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = core.read_model(str(model))
            self.compiled = core.compile_model(self.model, DEVICE, config)
        except Exception as exc:
            raise ConversionError(f"OpenVINO could not read or compile {Path(model).name}: {_error_text(exc)}") from None
        self.precision = precision_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.providers = [PROVIDER_NAME]
        self.timeout_s = None
        self.path = Path(model)
        self.input_specs = _input_specs(model)
        self._request = self.compiled.create_infer_request()

    def run(self, feeds: dict) -> dict:
        import numpy as np

        try:
            result = self._request.infer(feeds)
        except Exception as exc:
            from onnxkit.runtime.targets_openvino import _error_text

            raise InputError(f"OpenVINO could not run the model on these inputs: {_error_text(exc)}") from None
        return {n: np.array(result[self.compiled.outputs[i]]) for i, n in enumerate(self.output_names)}

    def node_providers(self) -> dict[str, int] | None:
        return {PROVIDER_NAME: sum(1 for op in self.model.get_ordered_ops()
                                   if op.get_type_name() not in ("Parameter", "Result", "Constant"))}

    def close(self) -> None:
        self._request = None


def _input_specs(model: str | os.PathLike[str]) -> list:
    """The model's inputs as ONNX declares them (what validate builds its inputs from)."""
    import onnx

    from onnxkit.foundation.spec import specs_from_onnx

    return specs_from_onnx(onnx.load(os.fspath(model), load_external_data=False))


def sample_feeds(model: str | os.PathLike[str], seed: int = 0) -> dict:
    """One seeded random batch for the contained rehearsal of a model validate or bench will run."""
    from onnxkit.foundation.data import random_feeds

    return random_feeds(_input_specs(model), batch=1, seed=seed)


def open_openvino(model: str | os.PathLike[str], *, trust: bool, first_feeds: dict | None,
                  precision: str | None = None, threads: int | None = None) -> OpenVinoSession:
    """An in-process OpenVINO session; for an untrusted model, after a contained rehearsal."""
    if not trust and first_feeds is not None:
        from onnxkit.foundation.sandbox import run_isolated

        from onnxkit.runtime.contained import default_memory_mb

        # the memory limit of ONNX Runtime's contained worker (OpenVINO's CPU plugin starts under it)
        run_isolated(_rehearse, os.fspath(model), first_feeds, precision, timeout_s=_REHEARSAL_TIMEOUT_S,
                     memory_mb=default_memory_mb(), what=f"model {Path(model).name} on OpenVINO")
    return OpenVinoSession(model, precision=precision, threads=threads)


def precision_notes(session: OpenVinoSession, asked: str | None) -> list[str]:
    if asked is None and session.precision != "f32":
        from onnxkit.runtime.targets_openvino import default_reason

        return [f"OpenVINO ran in {session.precision}: {default_reason(session.precision)}; "
                "--precision f32 forces float32"]
    if asked is not None and session.precision != asked:
        from onnxkit.runtime.targets_openvino import not_honoured

        return [not_honoured(asked, session.precision)]
    return [f"OpenVINO inference precision: {session.precision}"]
