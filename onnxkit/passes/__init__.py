"""Graph passes behind ``onnxkit optimize``, one contract for all of them.

A pass takes an ``onnx.ModelProto`` and returns ``(model, changed)``. Passes are named,
listable (``onnxkit optimize --list-passes``) and grouped in presets. A failure inside the
library underneath becomes a :class:`ConversionError` naming the pass (exit 4).
"""

from __future__ import annotations

import difflib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import ConversionError, OnnxkitError, UsageError

log = logging.getLogger(__name__)

PassFn = Callable[[Any], tuple[Any, bool]]


@dataclass(frozen=True)
class Pass:
    name: str
    group: str  # where it comes from: onnx, onnxoptimizer, onnxscript, onnxruntime
    description: str
    fn: PassFn

    def __call__(self, model: Any) -> tuple[Any, bool]:
        return self.fn(model)


@dataclass
class PassRecord:
    """What one pass did, for the report."""

    name: str
    changed: bool
    nodes_before: int
    nodes_after: int
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Pass] = {}

# onnxoptimizer passes that are not graph clean-ups: they rename, split or rewrite I/O, so a
# user may name them but no preset runs them.
_ONNXOPT_SKIP = {"rename_input_output", "set_unique_name_for_nodes", "split_init", "split_predict",
                 "lift_lexical_references", "rewrite_input_dtype", "adjust_add", "adjust_slice_and_matmul"}


def count_nodes(model: Any) -> int:
    return len(model.graph.node)


def _fingerprint(model: Any) -> tuple:
    g = model.graph
    return (len(g.node), tuple(n.op_type for n in g.node), len(g.initializer))


def register(p: Pass) -> Pass:
    _REGISTRY[p.name] = p
    return p


def _onnxoptimizer_pass(names: list[str], fixed_point: bool = False) -> PassFn:
    def run(model: Any) -> tuple[Any, bool]:
        import onnxoptimizer

        before = _fingerprint(model)
        out = onnxoptimizer.optimize(model, names, fixed_point=fixed_point)
        return out, _fingerprint(out) != before

    return run


def _shape_inference(model: Any) -> tuple[Any, bool]:
    import onnx

    before = len(model.graph.value_info)
    out = onnx.shape_inference.infer_shapes(model, data_prop=True)
    return out, len(out.graph.value_info) != before


def _constant_folding(model: Any) -> tuple[Any, bool]:
    import onnx_ir as ir
    import onnxscript.optimizer

    before = _fingerprint(model)
    irm = ir.serde.deserialize_model(model)
    onnxscript.optimizer.fold_constants(irm)
    onnxscript.optimizer.remove_unused_nodes(irm)
    out = ir.serde.serialize_model(irm)
    return out, _fingerprint(out) != before


def _onnxscript_optimize(model: Any) -> tuple[Any, bool]:
    import onnxscript.optimizer

    before = _fingerprint(model)
    out = onnxscript.optimizer.optimize(model, num_iterations=2)
    return out, _fingerprint(out) != before


def ort_offline(model: Any, level: str) -> Any:
    """Let ONNX Runtime optimize the graph at ``level`` and hand back the graph it saved."""
    import onnx

    from onnxkit.runtime.session import make_session

    with tempfile.TemporaryDirectory(prefix="onnxkit-ort-") as tmp:
        out_path = Path(tmp) / "optimized.onnx"
        make_session(model, level=level, optimized_model_path=str(out_path))
        out = onnx.load(str(out_path))
    return out


def _ort_pass(level: str) -> PassFn:
    def run(model: Any) -> tuple[Any, bool]:
        before = _fingerprint(model)
        out = ort_offline(model, level)
        return out, _fingerprint(out) != before

    return run


_BUILTINS_LOADED = False
_ONNXOPT_MISSING = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    register(Pass("shape_inference", "onnx", "ONNX shape inference with data propagation (records value_info).", _shape_inference))
    register(Pass("constant_folding", "onnxscript", "Fold nodes whose inputs are all constants; drop unused nodes.", _constant_folding))
    register(Pass("onnxscript_optimize", "onnxscript", "onnxscript's generic optimizer: inlining, constant folding, dead-code removal.", _onnxscript_optimize))
    from onnxkit.passes.transformer import split_skip_layernorm, unpack_attention

    register(Pass("split_skip_layernorm", "onnxkit",
                  "Rewrite fused SkipLayerNormalization as Add + LayerNormalization (faster on some ORT builds; "
                  "run after --transformer fusion).", split_skip_layernorm))

    def _unpack_attention(model: Any) -> tuple[Any, bool]:
        model, count = unpack_attention(model)
        return model, count > 0

    from onnxkit.passes.runtime_ops import unfuse_runtime_ops

    def _unfuse_runtime_ops(model: Any) -> tuple[Any, bool]:
        model, count = unfuse_runtime_ops(model)
        return model, count > 0

    register(Pass("unfuse_runtime_ops", "onnxkit",
                  "Split ONNX Runtime's FusedConv/FusedGemm back into Conv/Gemm + activation (portable; quantizable).",
                  _unfuse_runtime_ops))
    register(Pass("unpack_attention", "onnxkit",
                  "Rewrite fused Attention that ORT's quantizer skips (qkv_hidden_sizes, attention bias) as MatMul + "
                  "MultiHeadAttention, so int8 quantization reaches the Q/K/V projection.", _unpack_attention))
    for level in ("basic", "extended", "all"):
        desc = f"ONNX Runtime offline graph optimization at level {level}, saved as a graph"
        if level == "all":
            desc += " (ties the file to the execution provider and the ORT version)"
        register(Pass(f"ort_{level}", "onnxruntime", desc + ".", _ort_pass(level)))
    global _ONNXOPT_MISSING
    try:
        import onnxoptimizer
    except ImportError:  # its passes are then not listed; naming one says what to install
        _ONNXOPT_MISSING = True
        return
    fuse_elim = [p for p in onnxoptimizer.get_fuse_and_elimination_passes() if p not in _ONNXOPT_SKIP]
    register(Pass("fuse_and_eliminate", "onnxoptimizer",
                  f"All {len(fuse_elim)} onnxoptimizer fusion and elimination passes, repeated to a fixed point.",
                  _onnxoptimizer_pass(fuse_elim, fixed_point=True)))
    for name in onnxoptimizer.get_available_passes():
        if name in _REGISTRY or name == "nop":
            continue
        kind = "fusion" if name.startswith("fuse") else "elimination" if name.startswith("eliminate") else "rewrite"
        note = " (not in any preset: changes names or I/O)" if name in _ONNXOPT_SKIP else ""
        register(Pass(name, "onnxoptimizer", f"onnxoptimizer {kind} pass {name}{note}.", _onnxoptimizer_pass([name])))


PRESETS: dict[str, list[str]] = {
    # Safe everywhere: the file stays portable (standard ops only).
    # Folding runs again after the fusions: onnxoptimizer's fuse_bn_into_conv emits the fused
    # weights as a small arithmetic subgraph, not as new initializers.
    "default": ["shape_inference", "constant_folding", "fuse_and_eliminate", "constant_folding", "shape_inference"],
    # Adds ONNX Runtime's extended fusions (com.microsoft ops: the file then needs ORT).
    "aggressive": ["shape_inference", "constant_folding", "fuse_and_eliminate", "constant_folding", "ort_extended",
                   "shape_inference"],
}


def list_passes() -> list[Pass]:
    _load_builtins()
    return list(_REGISTRY.values())


def get_pass(name: str) -> Pass:
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if _ONNXOPT_MISSING and (name == "fuse_and_eliminate" or name.startswith(("fuse_", "eliminate_"))):
        from onnxkit.errors import MissingDependency

        raise MissingDependency("onnxoptimizer", "all")
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "run `onnxkit optimize --list-passes`"
    raise UsageError(f"unknown pass {name!r}", hint=hint)


def resolve(preset: str | None, names: list[str] | None) -> list[Pass]:
    """The passes to run: an explicit list wins over the preset; every name is checked first."""
    if names:
        return [get_pass(n) for n in names]
    key = preset or "default"
    if key not in PRESETS:
        raise UsageError(f"unknown preset {key!r}; choose from {', '.join(PRESETS)}")
    return [get_pass(n) for n in PRESETS[key]]


def apply_pass(p: Pass | str, model: Any, *, detail: dict[str, Any] | None = None) -> tuple[Any, PassRecord]:
    """Run one pass; map whatever the library raises to ConversionError naming the pass."""
    if isinstance(p, str):
        p = get_pass(p)
    before = count_nodes(model)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, changed = p(model)
    except ModuleNotFoundError as exc:  # e.g. onnxscript, which comes with the torch extra
        from onnxkit._lazy import EXTRA_OF
        from onnxkit.errors import MissingDependency

        top = (exc.name or "a module").split(".")[0]
        raise MissingDependency(top, EXTRA_OF.get(top, "all")) from exc
    except OnnxkitError as exc:
        from onnxkit.errors import EnvironmentProblem

        if isinstance(exc, EnvironmentProblem):  # a missing package or old runtime keeps exit 3
            raise
        raise ConversionError(f"pass {p.name} ({p.group}) failed: {exc.message}") from exc
    except Exception as exc:  # libraries raise anything: RuntimeError, ValueError, their own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"pass {p.name} ({p.group}) failed: {first}",
                              hint=f"leave it out with --passes (see --list-passes)") from exc
    rec = PassRecord(p.name, bool(changed), before, count_nodes(out), time.perf_counter() - t0, detail or {})
    log.debug("pass %s: %d -> %d nodes (%.2fs)", p.name, rec.nodes_before, rec.nodes_after, rec.seconds)
    return out, rec


def run_passes(model: Any, passes: list[Pass]) -> tuple[Any, list[PassRecord]]:
    records = []
    for p in passes:
        model, rec = apply_pass(p, model)
        records.append(rec)
    return model, records


__all__ = ["Pass", "PassRecord", "PRESETS", "list_passes", "get_pass", "resolve", "apply_pass", "run_passes",
           "register", "ort_offline", "count_nodes"]
