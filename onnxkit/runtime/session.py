"""ONNX Runtime sessions: the one place that creates them and runs them."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.spec import InputSpec, index_bounds, outputs_from_onnx, specs_from_onnx, with_bounds
from onnxkit.errors import ConversionError, EnvironmentProblem, InputError, UsageError, offered

log = logging.getLogger(__name__)

# Short names users type -> ONNX Runtime's provider names.
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "webgpu": "WebGpuExecutionProvider",
}

GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def ort():
    import onnxruntime

    # ORT prints warnings for every session (e.g. unused initializers) at level 2; users
    # read onnxkit's own messages instead.
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def available_providers() -> list[str]:
    return list(ort().get_available_providers())


def resolve_provider(name: str) -> str:
    """An alias or a (case-insensitive, partial) provider name -> ONNX Runtime's name."""
    key = name.strip().lower()
    if key in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[key]
    known = set(PROVIDER_ALIASES.values()) | set(available_providers())
    for full in sorted(known):
        if full.lower() == key or full.lower() == key + "executionprovider":
            return full
    raise UsageError(f"unknown execution provider {name!r}; known: {', '.join(sorted(PROVIDER_ALIASES))}")


def select_providers(names: list[str] | None, *, fallback: bool = False) -> list[str]:
    """Resolve the requested providers in priority order; exit 3 if one is missing
    (unless ``fallback``, which warns and drops to CPU)."""
    if not names:
        return ["CPUExecutionProvider"]
    wanted = [resolve_provider(n) for n in names]
    have = available_providers()
    missing = [p for p in wanted if p not in have]
    if missing:
        if not fallback:
            raise EnvironmentProblem(
                f"execution provider {', '.join(missing)} is not available; available: {', '.join(have)}",
                hint="install the onnxruntime package built for that provider" + (", or pass --fallback" if offered("--fallback") else ""),
            )
        log.warning("execution provider %s not available; falling back to CPU", ", ".join(missing))
        wanted = [p for p in wanted if p in have]
    if "CPUExecutionProvider" not in wanted:
        wanted.append("CPUExecutionProvider")
    return wanted


def _map_ort_error(exc: Exception, what: str) -> Exception:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = msg.lower()
    if "opset" in low and ("not supported" in low or "unsupported" in low or "is under development" in low):
        return EnvironmentProblem(f"{what}: the installed onnxruntime does not support this model's opset ({msg})")
    if "ir version" in low and "unsupported" in low:
        return EnvironmentProblem(f"{what}: the installed onnxruntime does not support this model's IR version ({msg})")
    if "could not find an implementation" in low or "not_implemented" in low:
        return ConversionError(f"{what}: ONNX Runtime has no kernel for an op in this model ({msg})")
    return InputError(f"{what}: ONNX Runtime refused the model ({msg})")


def _as_array(value: Any) -> Any:
    """A ZipMap output (ORT gives a list of {class: probability} dicts) as the [N, classes]
    array every consumer here expects: comparators, writers, the source's predict_proba.
    Columns follow the maps' key order, which is the sorted class order, as in
    scikit-learn's ``classes_``."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = list(value[0].keys())
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32).reshape(len(value), len(keys))
    return value


@dataclass
class OnnxSession:
    """A loaded ONNX Runtime session with named inputs and outputs."""

    session: object
    providers: list[str]
    input_specs: list[InputSpec]
    output_names: list[str]
    path: Path | None = None
    options: dict = field(default_factory=dict)

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        try:
            res = self.session.run(names, feeds)
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument types
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"ONNX Runtime could not run the model on these inputs: {msg}") from exc
        return {name: _as_array(value) for name, value in zip(names, res)}

    def close(self) -> None:
        """Nothing to stop in-process; here so callers treat this and a contained session alike."""

    def node_providers(self) -> dict[str, int] | None:
        """Nodes per execution provider, from ORT's profile of the optimized graph, where known.

        Needs a session made with ``profile=True`` that has run at least once; the first call
        ends profiling (so later runs are not slowed by it) and the answer is kept."""
        if "node_providers" in self.options:
            return self.options["node_providers"]
        if not self.options.get("profiling"):
            return None
        counts = _profile_node_providers(self.session)
        self.options["profiling"] = False
        self.options["node_providers"] = counts
        return counts


def make_session(
    model: str | os.PathLike[str] | bytes | object,
    *,
    providers: list[str] | None = None,
    provider_options: dict[str, dict[str, str]] | None = None,
    threads: int | None = None,
    level: str = "all",
    optimized_model_path: str | None = None,
    custom_op_library: str | None = None,
    profile: bool = False,
    spinning: bool = True,
    session_config: dict[str, str] | None = None,
) -> OnnxSession:
    """Create a session from a path, serialized bytes or a ModelProto.

    ``profile``: record ORT's profile until :meth:`OnnxSession.node_providers` is asked,
    to learn which execution provider ran each node. ``spinning=False``: ORT's worker
    threads sleep between runs instead of busy-waiting, so they do not steal the CPU from
    whatever runs next in the same process (another session, or PyTorch in a benchmark)."""
    rt = ort()
    so = rt.SessionOptions()
    so.log_severity_level = 3
    profile_dir = None
    if profile:
        import tempfile

        profile_dir = tempfile.mkdtemp(prefix="onnxkit-profile-")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort")
    if level not in GRAPH_LEVELS:
        raise UsageError(f"unknown optimization level {level!r}; choose from {', '.join(GRAPH_LEVELS)}")
    so.graph_optimization_level = getattr(rt.GraphOptimizationLevel, GRAPH_LEVELS[level])
    if threads:
        if threads < 1:
            raise UsageError("--threads must be at least 1")
        so.intra_op_num_threads = threads
    for key, value in (session_config or {}).items():
        so.add_session_config_entry(key, value)
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
    if custom_op_library:
        so.register_custom_ops_library(str(custom_op_library))
    provs = providers or ["CPUExecutionProvider"]
    opts = [dict((provider_options or {}).get(p, {})) for p in provs]
    path: Path | None = None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        src: object = str(model)
    elif isinstance(model, bytes):
        src = model
    else:
        from onnxkit.foundation.onnx_io import model_size_bytes

        if model_size_bytes(model) > 1_800_000_000:
            raise UsageError("models over 2 GB must be given to ONNX Runtime by path")
        src = model.SerializeToString()
    try:
        sess = rt.InferenceSession(src, sess_options=so, providers=provs, provider_options=opts)
    except Exception as exc:
        raise _map_ort_error(exc, f"cannot load {path.name if path else 'model'}") from exc
    inputs = []
    for i in sess.get_inputs():
        if not str(i.type).startswith("tensor("):
            # Data files and random inputs are arrays: a sequence/map/optional cannot be fed.
            raise InputError(f"input {i.name!r} is of type {i.type}: not supported (onnxkit feeds tensor inputs only)")
        inputs.append(InputSpec(i.name, tuple(d if isinstance(d, int) else (d or None) for d in (i.shape or [])), _ort_dtype(i.type)))
    if any(spec.dtype.kind in "iu" for spec in inputs):
        inputs = with_bounds(inputs, _index_bounds_of(model))
    outs = [o.name for o in sess.get_outputs()]
    options = {"profiling": True, "profile_dir": profile_dir} if profile else {}
    return OnnxSession(sess, sess.get_providers(), inputs, outs, path, options)


def _profile_node_providers(session) -> dict[str, int] | None:
    """End ORT profiling and count the nodes each provider ran (a fused or TensorRT
    subgraph node counts once). None when the profile holds no node events."""
    import json
    import shutil

    try:
        prof = session.end_profiling()
    except Exception as exc:  # a profile that cannot be written is not worth failing a run
        log.debug("could not end ORT profiling: %s", exc)
        return None
    if not prof:
        return None
    try:
        with open(prof, encoding="utf-8") as fh:
            events = json.load(fh)
    except (OSError, ValueError) as exc:
        log.debug("could not read ORT profile %s: %s", prof, exc)
        return None
    finally:
        shutil.rmtree(os.path.dirname(prof), ignore_errors=True)
    nodes: dict[str, str] = {}
    for ev in events if isinstance(events, list) else []:
        args = ev.get("args") or {}
        if ev.get("cat") == "Node" and args.get("provider"):
            # Each node has _fence_before/_kernel_time/_fence_after events; count it once.
            name = re.sub(r"_(kernel_time|fence_before|fence_after)$", "", str(ev.get("name", "")))
            nodes[name] = args["provider"]
    if not nodes:
        return None
    counts: dict[str, int] = {}
    for prov in nodes.values():
        counts[prov] = counts.get(prov, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _index_bounds_of(model) -> dict[str, int]:
    """Token-id ranges from the graph (see spec.index_bounds); weights are not read."""
    import onnx

    try:
        if isinstance(model, (str, os.PathLike)):
            model = onnx.load(str(model), load_external_data=False)
        elif isinstance(model, bytes):
            model = onnx.load_from_string(model)
        return index_bounds(model)
    except Exception:  # the session already loaded; a bound is a refinement, not a need
        return {}


_ORT_TYPES = {
    "float": np.float32, "float16": np.float16, "double": np.float64, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64,
    "uint64": np.uint64, "bool": np.bool_, "string": np.str_,
}


def _ort_dtype(type_str: str) -> np.dtype:
    m = re.match(r"tensor\((\w+)\)", type_str or "")
    if not m or m.group(1) not in _ORT_TYPES:
        return np.dtype(object)
    return np.dtype(_ORT_TYPES[m.group(1)])


__all__ = [
    "OnnxSession", "make_session", "select_providers", "resolve_provider", "available_providers",
    "PROVIDER_ALIASES", "specs_from_onnx", "outputs_from_onnx",
]
