"""``onnxkit quantize``: dynamic / static int8, weight-only int4 and fp16, with an accuracy
budget enforced by excluding the most sensitive nodes until the quantized model is within it.

Defaults come from measurements on all-MiniLM-L6-v2 (sentence-embedding cosine vs fp32):
per-tensor dynamic int8 (the library default) 0.957; per-channel 0.989; per-channel with
the single most sensitive MatMul kept in float 0.992. Hence per-channel on, and a budget
of cosine >= 0.99 that the loop below enforces.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.core.files import check_output_path
from onnxkit.core.onnx_io import load_onnx, save_onnx
from onnxkit.core.optimize import file_size, histogram_table, interleaved_latency, latency_feeds, op_histogram
from onnxkit.core.quantize_checks import check_quantizable, check_something_quantized, conv_hint, gemm_to_matmul
from onnxkit.errors import ConversionError, OnnxkitError, UsageError
from onnxkit.results import Result, Table, fmt_bytes, fmt_num

log = logging.getLogger(__name__)

MODES = ("dynamic", "static", "int4", "fp16")
METRICS = ("cosine", "maxabs", "label")
CALIB_METHODS = ("minmax", "entropy", "percentile")
# The error budget a quantized model must meet unless told otherwise (error = 1 - cosine).
DEFAULT_BUDGET = {"dynamic": 0.01, "static": 0.01, "int4": 0.02, "fp16": 0.001}
# Random inputs overstate int8 error on models fed real data (all-MiniLM-L6-v2, dynamic int8:
# 0.015 on random token ids, 0.009 on real sentences), and nodes kept in float on that
# evidence cost speed for nothing. Without --data the default budget is this much looser; it
# still catches a broken quantization (per-tensor weights on MiniLM: 0.043).
RANDOM_DATA_BUDGET_FACTOR = 2.0


def default_budget(mode: str, *, random_data: bool) -> float:
    """The accuracy budget when the user gave no --max-error."""
    loose = random_data and mode != "fp16"
    return DEFAULT_BUDGET[mode] * (RANDOM_DATA_BUDGET_FACTOR if loose else 1.0)


def random_budget_note(mode: str) -> str:
    return (f"accuracy measured on random inputs, which overstate quantization error: default budget "
            f"{default_budget(mode, random_data=True):g} instead of {DEFAULT_BUDGET[mode]:g}; pass --data with real "
            "samples (or --max-error) for a budget measured on what the model will see")


# Modes where transformer graphs are fused first: their int8/int4 MatMul kernels gain from it.
FUSED_MODES = ("dynamic", "int4")
# Ops whose weights a quantizer rewrites: the candidates for exclusion.
WEIGHTED_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "Gather", "LSTM", "EmbedLayerNormalization"}
QUANT_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv", "QGemm",
             "MatMulNBits", "QAttention", "DynamicQuantizeLSTM", "QEmbedLayerNormalization", "MatMulIntegerToFloat"}
MAX_BUDGET_ROUNDS = 12


# ---------------------------------------------------------------- node selection

def source_layers(node: Any) -> list[str]:
    """The framework module paths a node came from: torch.export records them in
    ``pkg.torch.onnx.name_scopes``; TorchScript exports in node names like
    ``/encoder/layer.0/output/dense/MatMul``."""
    out: list[str] = []
    for p in node.metadata_props:
        if p.key.endswith("name_scopes"):
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                continue
            # the last entry is the FX node itself, not a module
            out.extend(s for s in scopes[:-1] if s)
    if node.name.startswith("/") and node.name.count("/") >= 2:
        parts = node.name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.append(".".join(parts[:i]))
    return out


def _layer_matches(pattern: str, layer: str) -> bool:
    # A wrapper module adds a prefix (``m.encoder...``); the user names the inner module.
    return layer == pattern or layer.endswith("." + pattern) or fnmatch.fnmatchcase(layer, pattern) \
        or fnmatch.fnmatchcase(layer, "*." + pattern)


def select_nodes(model: Any, patterns: list[str], *, what: str = "--exclude-nodes") -> dict[str, list[str]]:
    """pattern -> node names. A pattern is a node name, a glob over node names, or a source
    layer name (exact, suffix or glob). One that matches nothing is an error."""
    found: dict[str, list[str]] = {}
    nodes = list(model.graph.node)
    layers = {n.name: source_layers(n) for n in nodes}
    for pat in patterns:
        hits = [n.name for n in nodes if n.name == pat or fnmatch.fnmatchcase(n.name, pat)]
        if not hits:
            hits = [n.name for n in nodes if any(_layer_matches(pat, lay) for lay in layers[n.name])]
        if not hits:
            raise UsageError(f"{what} pattern {pat!r} matches no node (by node name, glob or source layer)",
                             hint="see node names with `onnxkit inspect`")
        found[pat] = hits
    return found


def select_ops(model: Any, ops: list[str]) -> dict[str, list[str]]:
    present = {n.op_type for n in model.graph.node}
    out: dict[str, list[str]] = {}
    for op in ops:
        if op not in present:
            raise UsageError(f"--exclude-ops {op!r} matches no node; the model's ops are: {', '.join(sorted(present))}")
        out[op] = [n.name for n in model.graph.node if n.op_type == op]
    return out


def map_to_prepared(original: Any, prepared: Any, names: list[str]) -> list[str]:
    """Names in the prepared graph of the given original nodes: the same name where it
    survived, else the node that now produces the same output tensor."""
    have = {n.name for n in prepared.graph.node}
    producer = {o: n.name for n in prepared.graph.node for o in n.output}
    outputs = {n.name: list(n.output) for n in original.graph.node}
    out: list[str] = []
    for name in names:
        if name in have:
            hit = name
        else:
            hit = next((producer[o] for o in outputs.get(name, []) if o in producer), None)
        if hit and hit not in out:
            out.append(hit)
    return out


def _name_nodes(model: Any) -> None:
    # Quantizers select nodes by name; unnamed nodes could neither be excluded nor reported.
    seen: set[str] = set()
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type}_{i}"
        seen.add(n.name)


# ---------------------------------------------------------------- calibration data

class _Batches:
    """Re-iterable batches: the user's data streamed from disk, or seeded random feeds."""

    def __init__(self, specs: list, *, data_path: str | None = None, random_n: int = 0, batch: int = 8, seed: int = 0) -> None:
        # absolute: the quantizers read batches while the working directory is elsewhere
        self.data_path = os.path.abspath(data_path) if data_path else None
        self.specs, self.random_n, self.seed = specs, random_n, seed
        fixed = [s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int)]
        self.batch = fixed[0] if fixed else batch

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from onnxkit.core.data import check_feeds, open_data, random_feeds

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


# ---------------------------------------------------------------- quantizers

@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """Run with ``folder`` as the working directory: ORT's quantization tools drop temporary
    files (sym_shape_infer_temp.onnx, <uuid>.data copies of all weights) in the current
    directory and leave them behind when a step fails."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def preprocess(model: Any, workdir: Path) -> tuple[Any, list[str]]:
    """ORT's quantization pre-processing (symbolic shape inference + basic optimization)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = []
    out = workdir / "pre.onnx"
    src = workdir / "float.onnx"
    onnx.save_model(model, str(src))
    for kwargs in ({}, {"skip_symbolic_shape": True}):
        try:
            with warnings.catch_warnings(), _inside(workdir), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore")
                quant_pre_process(str(src), str(out), **kwargs)
            if kwargs:
                notes.append("quantization pre-processing ran without symbolic shape inference (it failed on this graph)")
            return onnx.load(str(out)), notes
        except Exception as exc:
            log.debug("quant_pre_process %s failed: %s", kwargs, exc)
            last = exc
    notes.append(f"quantization pre-processing skipped: {_first_line(last)}")
    return model, notes


def _prepare_large(model_path: Path, work: Path) -> tuple[Any, str]:
    """Pre-processing for a model over 2 GB: ONNX Runtime's basic optimization from path to
    path (constant folding makes weights behind Transpose/Reshape constant, hence
    quantizable), writing ``work/base.onnx`` + data; returns its graph and a note.
    quant_pre_process is not used: its shape inference loads every weight into one protobuf."""
    from onnxkit.passes.large import load_graph, ort_optimize_file, save_streaming

    dest = work / "base.onnx"
    try:
        ort_optimize_file(model_path, dest, "basic")
        return load_graph(dest), ("quantization pre-processing: ONNX Runtime basic optimization by path only (model over "
                                  "2 GB: symbolic shape inference would load every weight)")
    except OnnxkitError as exc:
        log.debug("ORT basic optimization failed on the large model: %s", exc)
        import onnx

        base = onnx.load(str(model_path), load_external_data=False)
        save_streaming(base, model_path.parent, dest)  # chunked copy: the quantizers need a file in work/
        return base, f"quantization pre-processing skipped (model over 2 GB; ONNX Runtime's optimization failed: {exc.message})"


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has VNNI int8 dot products; None when unknown (not Linux x86)."""
    from onnxkit.core.hostfacts import host_facts

    return host_facts().x86_int8_dot


def default_reduce_range() -> bool:
    # Measured: on AVX2 CPUs without VNNI, ORT's u8 x s8 kernels saturate 16-bit partial sums;
    # a tiny MLP's dynamic int8 max error was 0.196 at full range vs 0.010 with reduce_range.
    return cpu_has_vnni() is False


def prune_unused_opsets(model: Any) -> None:
    """Drop opset imports no node uses: ORT's pre-processing declares every domain it
    knows (ai.onnx.training, org.pytorch.aten, ...), which misleads readers and checkers."""
    from onnxkit.core.onnx_io import _iter_graphs

    used = {n.domain or "" for g in _iter_graphs(model.graph) for n in g.node}
    used |= {f.domain for f in model.functions}
    keep = [imp for imp in model.opset_import if (imp.domain or "") in used or imp.domain in ("", "ai.onnx")]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


@dataclass
class QuantConfig:
    mode: str
    fmt: str = "qdq"
    per_channel: bool = True
    weight_type: str = "int8"
    activation_type: str = "uint8"
    calib_method: str = "minmax"
    block_size: int = 128
    calib: _Batches | None = None
    reduce_range: bool = False


def run_quantizer(model: Any, cfg: QuantConfig, exclude: list[str], workdir: Path, *, large: bool = False) -> Any:
    """Quantize ``model`` (a prepared float ModelProto) leaving the ``exclude`` nodes in float.

    ``large``: the model is over the protobuf limit and ``workdir/base.onnx`` (with its
    external data) already holds it; the quantizers read and write by path with external
    data, and the quantized file's path is returned instead of a loaded model."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    out = workdir / f"q{time.perf_counter_ns()}.onnx"
    # The quantizers get a path, never our proto: given a proto they save it with external
    # data and may rewrite it in place, which broke later runs on the same proto.
    src = workdir / "base.onnx"
    if not src.exists():
        onnx.save_model(model, str(src))
    wtype = QuantType.QInt8 if cfg.weight_type == "int8" else QuantType.QUInt8
    name = {"dynamic": "quantize_dynamic", "static": "quantize_static", "int4": "MatMulNBitsQuantizer", "fp16": "float16"}[cfg.mode]
    keep_out = False
    try:
        # The entropy/percentile calibrators print progress to stdout, which must hold only
        # the JSON document in --json mode.
        with warnings.catch_warnings(), _inside(workdir), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            if cfg.mode == "dynamic":
                # Dynamic quantization rewrites Gemm X into MatMul X_MatMul (+ Add) before it
                # selects nodes; an excluded Gemm must stay excluded under its new name.
                names = list(exclude) + [f"{n}_MatMul" for n in exclude]
                quantize_dynamic(str(src), str(out), per_channel=cfg.per_channel, weight_type=wtype,
                                 reduce_range=cfg.reduce_range, nodes_to_exclude=names,
                                 use_external_data_format=large, extra_options={"MatMulConstBOnly": True})
                if large:
                    keep_out = True
                    return out
                return onnx.load(str(out))
            if cfg.mode == "static":
                assert cfg.calib is not None
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[cfg.calib_method]
                quantize_static(str(src), str(out), _calibration_reader(cfg.calib),
                                quant_format=QuantFormat.QDQ if cfg.fmt == "qdq" else QuantFormat.QOperator,
                                per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                                activation_type=QuantType.QInt8 if cfg.activation_type == "int8" else QuantType.QUInt8, weight_type=wtype,
                                nodes_to_exclude=list(exclude), calibrate_method=method,
                                use_external_data_format=large, extra_options={"MatMulConstBOnly": True})
                if large:
                    keep_out = True
                    return out
                return onnx.load(str(out))
            if cfg.mode == "int4":
                from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

                # By path for a large model: the quantizer then loads the weights itself, once.
                # Gemm (pre-processing's fusion of MatMul + Add) is split back: the quantizer only reaches MatMul.
                q = MatMulNBitsQuantizer(str(src) if large else gemm_to_matmul(onnx.load(str(src)))[0], bits=4,
                                         block_size=cfg.block_size, is_symmetric=True,
                                         nodes_to_exclude=list(exclude) + [f"{n}_MatMul" for n in exclude],
                                         op_types_to_quantize=("MatMul",))
                q.process()
                if large:
                    q.model.save_model_to_file(str(out), use_external_data_format=True)
                    keep_out = True
                    return out
                return q.model.model
            from onnxkit.passes.fp16 import to_fp16

            fresh = onnx.load(str(src))  # the converter edits the proto it is given
            return to_fp16(fresh) if not exclude else _fp16_excluding(fresh, exclude)
    except OnnxkitError:
        raise
    except Exception as exc:
        raise ConversionError(f"{name} failed: {_first_line(exc)}") from exc
    finally:
        if not keep_out:
            out.unlink(missing_ok=True)
            Path(str(out) + ".data").unlink(missing_ok=True)


def _fp16_excluding(model: Any, exclude: list[str]) -> Any:
    from onnxruntime.transformers import float16

    from onnxkit.passes.fp16 import FP16_UNSAFE_OPS

    return float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=list(exclude),
                                            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + FP16_UNSAFE_OPS)


# ---------------------------------------------------------------- error and sensitivity

@dataclass
class ErrorMeasure:
    metric: str
    error: float  # the number the budget applies to (lower is better)
    cosine: float | None = None
    max_abs: float | None = None
    agreement: float | None = None
    samples: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)


def measure_error(float_model: Any, quant_model: Any, batches: list[dict], metric: str, *,
                  sequential: bool = False) -> ErrorMeasure:
    """``sequential``: one session alive at a time (the float outputs are kept, then the
    float session is closed), for models whose weights must not be held twice."""
    from onnxkit.core.compare import Comparator, Tolerance
    from onnxkit.runtime.session import make_session

    comp = Comparator(Tolerance(atol=1e30, rtol=0.0))
    if sequential:
        import gc

        ref = make_session(float_model)
        refs = [ref.run(feeds) for feeds in batches]
        del ref
        gc.collect()
        cand = make_session(quant_model)
        for feeds, r in zip(batches, refs):
            comp.add(r, ignore_padding(feeds, r, cand.run(feeds)))
        del cand
        gc.collect()
    else:
        ref, cand = make_session(float_model), make_session(quant_model)
        for feeds in batches:
            r, c = ref.run(feeds), cand.run(feeds)
            comp.add(r, ignore_padding(feeds, r, c))
    outs = comp.results()
    cosines = [o.cosine for o in outs if o.cosine is not None]
    agrees = [a for o in outs for a in (o.label_agreement if o.label_agreement is not None else o.top1_agreement,) if a is not None]
    m = ErrorMeasure(metric=metric, error=0.0, samples=comp.rows,
                     cosine=min(cosines) if cosines else None,
                     max_abs=max(o.max_abs for o in outs), agreement=min(agrees) if agrees else None,
                     outputs=[{"name": o.name, "cosine": o.cosine, "max_abs": o.max_abs, "mean_abs": o.mean_abs,
                               "agreement": o.label_agreement if o.label_agreement is not None else o.top1_agreement,
                               "nan_mismatch": o.nan_mismatch} for o in outs])
    if any(o.nan_mismatch for o in outs):
        m.error = float("inf")
    elif metric == "cosine":
        if m.cosine is None:
            raise UsageError("--metric cosine needs a float output; use --metric label or maxabs")
        m.error = 1.0 - m.cosine
    elif metric == "label":
        if m.agreement is None:
            raise UsageError("--metric label needs a label or score output (2-D); use --metric cosine or maxabs")
        m.error = 1.0 - m.agreement
    else:
        m.error = float(m.max_abs or 0.0)
    return m


def _padding_mask(feeds: dict) -> np.ndarray | None:
    for k, v in feeds.items():
        if "mask" in k.lower() and v.ndim == 2 and v.dtype.kind in "iub":
            return np.asarray(v) == 0
    return None


def ignore_padding(feeds: dict, ref: dict, cand: dict) -> dict:
    """Outputs at padded positions (attention_mask == 0) are don't-care values that no
    consumer reads (pooling masks them); copy the reference there so they do not count.
    Measured on MiniLM: with padding counted, token-level cosine was 0.958 while the
    mean-pooled sentence cosine was 0.993."""
    pad = _padding_mask(feeds)
    if pad is None or not pad.any():
        return cand
    out = dict(cand)
    for k, v in cand.items():
        if v.ndim >= 2 and v.shape[:2] == pad.shape and ref[k].shape == v.shape:
            fixed = np.array(v, copy=True)
            fixed[pad] = ref[k][pad]
            out[k] = fixed
    return out


def _with_outputs(model: Any, names: list[str]) -> Any:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel()
    b = b.astype(np.float64).ravel()
    den = np.linalg.norm(a)
    return float(np.linalg.norm(a - b) / den) if den > 0 else float(np.linalg.norm(b) > 0)


def rank_sensitivity(float_model: Any, quant_model: Any, candidates: list[Any], feeds: dict) -> list[tuple[str, float]]:
    """Score each candidate node by the relative error it adds: the error of its output in the
    quantized graph minus the error already present at its (activation) input. Both graphs
    keep the float tensor names at node boundaries, so intermediates can be compared by name."""
    from onnxkit.runtime.session import make_session

    float_names = {o for n in float_model.graph.node for o in n.output}
    quant_names = {o for n in quant_model.graph.node for o in n.output} | {i.name for i in quant_model.graph.input}
    inits = {t.name for t in float_model.graph.initializer}
    pairs = []
    for n in candidates:
        outs = [o for o in n.output[:1] if o in quant_names]
        ins = [i for i in n.input if i and i not in inits and (i in float_names or i in {x.name for x in float_model.graph.input})]
        if outs:
            pairs.append((n.name, outs[0], ins[0] if ins and ins[0] in quant_names else None))
    if not pairs:
        return []
    names = sorted({p[1] for p in pairs} | {p[2] for p in pairs if p[2]})
    graph_inputs = {i.name for i in float_model.graph.input}
    fetch = [x for x in names if x not in graph_inputs]
    try:
        fs = make_session(_with_outputs(float_model, fetch))
        qs = make_session(_with_outputs(quant_model, fetch))
        fo = fs.run(feeds, fetch)
        qo = ignore_padding(feeds, fo, qs.run(feeds, fetch))
        fo, qo = fo | dict(feeds), qo | dict(feeds)
    except OnnxkitError as exc:
        log.debug("intermediate comparison failed: %s", exc)
        return []
    scores = []
    for name, out, inp in pairs:
        e_out = _rel(fo[out], qo[out]) if fo[out].dtype.kind == "f" else 0.0
        e_in = _rel(fo[inp], qo[inp]) if inp and fo[inp].dtype.kind == "f" else 0.0
        scores.append((name, e_out - e_in))
    scores.sort(key=lambda kv: -kv[1])
    return scores


# ---------------------------------------------------------------- result

@dataclass
class QuantizeResult(Result):
    model: str = ""
    output: str = ""
    mode: str = ""
    format: str | None = None
    per_channel: bool | None = None
    weight_type: str | None = None
    reduce_range: bool = False
    target_cpu: dict[str, Any] | None = None
    calibration: str | None = None
    size_before: int = 0
    size_after: int = 0
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency_feeds: str = ""
    metric: str = "cosine"
    max_error: float | None = None
    error: dict[str, Any] | None = None
    error_first: dict[str, Any] | None = None
    eval_data: str = ""
    budget_met: bool | None = None
    nodes_quantized: int = 0
    quantized_ops: dict[str, int] = field(default_factory=dict)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    ops_before: dict[str, int] = field(default_factory=dict)
    ops_after: dict[str, int] = field(default_factory=dict)
    preprocess_notes: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        speed = (self.latency_ms_before / self.latency_ms_after) if self.latency_ms_before and self.latency_ms_after else None
        ratio = self.size_after / self.size_before if self.size_before else None
        e = self.error or {}
        rows = [
            ["file size", fmt_bytes(self.size_before), fmt_bytes(self.size_after) + (f" ({100 * ratio:.0f}%)" if ratio else "")],
            [f"latency CPU ({self.latency_feeds})", f"{fmt_num(self.latency_ms_before)} ms",
             f"{fmt_num(self.latency_ms_after)} ms" + (f" ({speed:.2f}x)" if speed else "")],
            ["nodes quantized", "-", self.nodes_quantized],
            ["nodes kept in float (excluded)", "-", len(self.excluded)],
            ["cosine vs float", "1", fmt_num(e.get("cosine"))],
            ["max abs diff vs float", "0", fmt_num(e.get("max_abs"))],
            ["label/top-1 agreement", "1", fmt_num(e.get("agreement"))],
        ]
        if self.max_error is not None:
            first = (self.error_first or {}).get("error")
            rows.append([f"error ({self.metric}) vs budget {fmt_num(self.max_error)}",
                         f"first try {fmt_num(first)}", f"{fmt_num(e.get('error'))} ({'met' if self.budget_met else 'MISSED'})"])
        head = f"quantize {Path(self.model).name} -> {Path(self.output).name} ({self.mode}" + \
            (f", {self.format}" if self.format else "") + (", per-channel" if self.per_channel else "") + ")"
        tables = [Table(head, ["", "float", "quantized"], rows)]
        if self.excluded:
            tables.append(Table("Kept in float", ["node", "op", "why"], [[x["node"], x.get("op", ""), x["reason"]] for x in self.excluded]))
        tables.append(histogram_table("Operators", self.ops_before, self.ops_after))
        return tables


# ---------------------------------------------------------------- the command

def _quantized_count(model: Any) -> tuple[int, dict[str, int]]:
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    int_tables = {t.name for t in model.graph.initializer if t.data_type in (2, 3) and len(t.dims) == 2}  # UINT8, INT8
    hist: dict[str, int] = {}
    n_q = 0
    for n in model.graph.node:
        q = (n.op_type in QUANT_OPS
             or (n.op_type in WEIGHTED_OPS and any(produced_by.get(i) == "DequantizeLinear" for i in n.input))
             or (n.op_type == "Gather" and bool(n.input) and n.input[0] in int_tables))
        if q:
            n_q += 1
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return n_q, hist


def _fp16_count(model: Any) -> tuple[int, dict[str, int]]:
    # fp16: a node computes in half precision when its first float input is fp16.
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(model.graph.value_info) + list(model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    hist: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type != "Cast" and any(types.get(i) == 10 for i in n.input):
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return sum(hist.values()), hist


def quantize_model(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    mode: str = "dynamic",
    calib_data: str | None = None,
    calib_random: int = 0,
    calib_method: str = "minmax",
    fmt: str = "qdq",
    per_channel: bool = True,
    weight_type: str = "int8",
    activation_type: str = "uint8",
    exclude_ops: list[str] | None = None,
    exclude_nodes: list[str] | None = None,
    max_error: float | None = None,
    budget: bool = True,
    metric: str = "cosine",
    data: str | None = None,
    block_size: int = 128,
    reduce_range: bool | None = None,
    seed: int = 0,
    latency: bool = True,
    trust: bool = False,
    probe: bool = False,
    fuse: bool = True,
    target_cpu: str = "portable",
) -> QuantizeResult:
    from onnxkit.core import quantize_target
    from onnxkit.core.spec import specs_from_onnx

    if mode not in MODES:
        raise UsageError(f"unknown --mode {mode!r}; choose from {', '.join(MODES)}")
    if metric not in METRICS:
        raise UsageError(f"unknown --metric {metric!r}; choose from {', '.join(METRICS)}")
    if calib_method not in CALIB_METHODS:
        raise UsageError(f"unknown --calib-method {calib_method!r}; choose from {', '.join(CALIB_METHODS)}")
    if fmt not in ("qdq", "qoperator"):
        raise UsageError(f"unknown --format {fmt!r}; choose from qdq, qoperator")
    if weight_type not in ("int8", "uint8"):
        raise UsageError(f"unknown --weight-type {weight_type!r}; choose from int8, uint8")
    if activation_type not in ("int8", "uint8"):
        raise UsageError(f"unknown --activation-type {activation_type!r}; choose from uint8, int8")
    if block_size < 16 or block_size & (block_size - 1):
        raise UsageError(f"--block-size {block_size} must be a power of two >= 16")
    if calib_random < 0:
        raise UsageError("--calib-random must be a positive number of samples")
    if mode == "static" and not calib_data and not calib_random:
        raise UsageError("static quantization needs calibration data: pass --calib-data FILE (or --calib-random N)",
                         hint="dynamic quantization (--mode dynamic) needs none")
    if calib_data and calib_random:
        raise UsageError("give either --calib-data or --calib-random, not both")
    if max_error is not None and (not np.isfinite(max_error) or max_error < 0):
        raise UsageError("--max-error must be a finite, non-negative number")
    target = quantize_target.resolve_target(target_cpu)
    check_output_path(output, model_path)
    from onnxkit.passes.large import is_large

    # Graph first: whether the weights may be loaded at all depends on their size.
    loaded = load_onnx(model_path, trust=trust, load_external=False)
    large = is_large(loaded.model)
    if large and mode == "fp16":
        raise UsageError("--mode fp16 is not supported on models over 2 GB: the converter needs every weight in memory",
                         hint="use --mode dynamic, static or int4, which read the weights by path")
    if not large and loaded.external_files:
        loaded = load_onnx(model_path, trust=trust)
    original = loaded.model
    _name_nodes(original)
    check_quantizable(original, mode)
    specs = specs_from_onnx(original)
    res = QuantizeResult(command="quantize", model=str(model_path), output=str(output), mode=mode, metric=metric)
    res.notes.extend(loaded.warnings)
    res.size_before = file_size(model_path, loaded.external_files)
    res.ops_before = op_histogram(original)
    if mode in ("dynamic", "static"):
        res.per_channel, res.weight_type = per_channel, weight_type
    if mode == "static":
        res.format = fmt
    if budget:
        res.max_error = default_budget(mode, random_data=not (data or calib_data)) if max_error is None else max_error
        if max_error is None and metric != "cosine":
            raise UsageError(f"--metric {metric} needs --max-error (the default budget is for cosine)")

    calib = None
    if mode == "static":
        if calib_data:
            from onnxkit.core.data import open_data

            open_data(calib_data, specs)  # preflight now, before any work
            calib = _Batches(specs, data_path=calib_data, seed=seed)
            res.calibration = f"{Path(calib_data).name} ({calib_method})"
        else:
            calib = _Batches(specs, random_n=calib_random, seed=seed)
            res.calibration = f"{calib_random} random samples ({calib_method})"
            res.notes.append(f"calibrating on {calib_random} RANDOM samples: random inputs are a poor proxy for real data "
                             "and can set activation ranges far off; use --calib-data with real samples")
            log.warning("static quantization calibrated on random data (--calib-random): a poor proxy for real inputs")
    # Data for the error measurement: --data, else the calibration data, else random.
    if data:
        from onnxkit.core.data import open_data

        open_data(data, specs)
        eval_src = _Batches(specs, data_path=data, seed=seed)
        res.eval_data = Path(data).name
    elif calib_data:
        eval_src = _Batches(specs, data_path=calib_data, seed=seed)
        res.eval_data = f"{Path(calib_data).name} (calibration data)"
    else:
        eval_src = _Batches(specs, random_n=32, seed=seed + 1000)
        res.eval_data = "32 random samples"
        if res.max_error is not None and max_error is None and mode != "fp16":
            res.notes.append(random_budget_note(mode))
    eval_batches = []
    rows = 0
    for feeds in eval_src:  # bounded: enough rows for stable metrics, not the whole file
        eval_batches.append(feeds)
        rows += int(next(iter(feeds.values())).shape[0])
        if rows >= 256:
            break
    if probe:  # the untrusted input, contained, on what it is measured and calibrated with below
        from onnxkit.core.sandbox import probe_model_file

        random_calib = list(calib) if calib is not None and not calib.data_path else []
        probe_model_file(model_path, original, extra=eval_batches + random_calib, data=calib_data)

    # The CPU the model is made for decides the weight range, not the one quantizing it.
    reduce_range, int8_weights, range_notes = quantize_target.choose_reduce_range(target, reduce_range, mode=mode,
                                                                                  weight_type=weight_type)
    res.notes.extend(range_notes)
    res.reduce_range = reduce_range
    res.target_cpu = target.to_dict(reduce_range=reduce_range, weights=int8_weights)
    cfg = QuantConfig(mode=mode, fmt=fmt, per_channel=per_channel, weight_type=weight_type, activation_type=activation_type,
                      calib_method=calib_method, block_size=block_size, calib=calib, reduce_range=bool(reduce_range))
    # A large model's scratch copies go beside the output: /tmp may not hold them.
    with tempfile.TemporaryDirectory(prefix=".onnxkit-quant-" if large else "onnxkit-quant-",
                                     dir=Path(output).parent if large else None) as tmp:
        work = Path(tmp)
        import onnx

        base = onnx.ModelProto()
        base.CopyFrom(original)  # graph only when large: the weights are not in memory
        if large:
            base, note = _prepare_large(loaded.path, work)
            res.preprocess_notes = [note]
            res.notes.append(note)
        elif mode != "fp16":
            from onnxkit.passes.runtime_ops import unfuse_runtime_ops

            base, unfused = unfuse_runtime_ops(base)
            notes = [f"{unfused} ONNX Runtime fused node(s) (FusedConv/FusedGemm) split back into standard ops, which "
                     "the quantizers know; ONNX Runtime fuses the quantized graph again"] if unfused else []
            if fuse and mode in FUSED_MODES:
                if exclude_nodes or exclude_ops:
                    # Patterns name nodes of the unfused graph, and fusion moves MatMuls into
                    # Attention (which ORT may quantize as QAttention): honour the user's choice.
                    notes.append("transformer fusion before quantizing skipped: --exclude-nodes/--exclude-ops name "
                                 "nodes and ops of the unfused graph")
                else:
                    from onnxkit.passes.transformer import prepare_for_quantization

                    unfused = onnx.ModelProto()
                    unfused.CopyFrom(base)
                    base, fuse_notes = prepare_for_quantization(base, mode)
                    if fuse_notes:
                        base, fuse_notes = _keep_if_faithful(unfused, base, fuse_notes, eval_batches[:2])
                    notes.extend(fuse_notes)
            base, pre_notes = preprocess(base, work)
            notes.extend(pre_notes)
            res.preprocess_notes = notes
            res.notes.extend(notes)
        _name_nodes(base)
        by_node = {n.name: n for n in base.graph.node}
        excluded: dict[str, str] = {}
        for op, names in select_ops(base, list(exclude_ops or [])).items():
            for n in names:
                excluded.setdefault(n, f"--exclude-ops {op}")
        # Patterns are matched on the user's model: pre-processing drops the node metadata
        # that records source layers, and may rename or fuse nodes.
        for pat, names in select_nodes(original, list(exclude_nodes or [])).items():
            mapped = map_to_prepared(original, base, names)
            if not mapped:
                res.notes.append(f"--exclude-nodes {pat}: its nodes were folded away by pre-processing; nothing to keep in float")
            for n in mapped:
                excluded.setdefault(n, f"--exclude-nodes {pat}")

        if large:
            from onnxkit.passes.large import load_graph, save_streaming

            # The quantizers read a file: base.onnx, with the node names they select by.
            (work / "base.onnx").write_bytes(base.SerializeToString())  # graph only
            if mode == "dynamic" and per_channel and weight_type == "int8":
                # ORT's quantize_dynamic holds the float model and each quantized copy (3.3x the
                # size at peak on 2.1 GB); this reads and writes one weight chunk at a time.
                from onnxkit.core.quantize_stream import quantize_dynamic_streaming

                graph_only = onnx.ModelProto()
                graph_only.CopyFrom(base)
                streamed = quantize_dynamic_streaming(graph_only, work, work / "q_stream.onnx", exclude=set(excluded),
                                                      reduce_range=bool(reduce_range))
                qpath = streamed.path
                res.notes.append(f"quantized weight by weight from disk (model over 2 GB): {len(streamed.quantized)} "
                                 "MatMul/Gather node(s), per-channel symmetric int8")
            else:
                qpath = run_quantizer(base, cfg, list(excluded), work, large=True)
            qmodel = load_graph(qpath)
            err = measure_error(str(loaded.path), str(qpath), eval_batches, metric, sequential=True)
        else:
            qmodel = run_quantizer(base, cfg, list(excluded), work)
            err = measure_error(original, qmodel, eval_batches, metric)
        res.error_first = vars(err) | {}
        if res.max_error is not None and err.error > res.max_error:
            if large:
                res.notes.append("accuracy budget not enforced by excluding nodes on a model over 2 GB (each round "
                                 "re-quantizes the whole model); keep nodes in float with --exclude-nodes/--exclude-ops")
            else:
                qmodel, err = _budget_loop(original, base, qmodel, err, cfg, excluded, eval_batches, metric, res.max_error, work)
        res.error = vars(err) | {}
        res.budget_met = None if res.max_error is None else err.error <= res.max_error
        res.excluded = [{"node": n, "op": by_node[n].op_type if n in by_node else "", "reason": r} for n, r in excluded.items()]
        if mode == "fp16":
            res.nodes_quantized, res.quantized_ops = _fp16_count(qmodel)
        else:
            res.nodes_quantized, res.quantized_ops = _quantized_count(qmodel)
        check_something_quantized(res.nodes_quantized, mode, base, excluded)
        res.ops_after = op_histogram(qmodel)
        prune_unused_opsets(qmodel)
        quantize_target.stamp(qmodel, target, weights=int8_weights)
        if large:
            save_streaming(qmodel, work, output)
        else:
            save_onnx(qmodel, output)
        del qmodel
    res.size_after = file_size(output)
    if res.budget_met is False:
        res.passed = False
        res.notes.append(f"accuracy budget missed: {metric} error {err.error:.4g} > {res.max_error:g} even after excluding "
                         f"{len(res.excluded)} node(s); {output} was written anyway")
    if latency:
        try:
            feeds = latency_feeds(specs, batch=8 if any(not isinstance(s.shape[0], int) for s in specs if s.shape) else 1)
            if large:
                from onnxkit.passes.large import sequential_latency

                before, after = sequential_latency([str(model_path), str(output)], feeds, rounds=10)
            else:
                before, after = interleaved_latency([str(model_path), str(output)], feeds, rounds=10)
            res.latency_ms_before, res.latency_ms_after = before, after
            res.latency_feeds = "random, batch 8" if feeds and next(iter(feeds.values())).shape[:1] == (8,) else "random"
            if large:
                res.latency_feeds += ", one model after the other"
        except Exception as exc:  # latency is informative only
            res.notes.append(f"latency not measured: {exc}")
    hint = conv_hint(original, mode, res.latency_ms_before, res.latency_ms_after)
    if hint:
        res.notes.append(hint)
    return res


# A float rewrite must not move the answers. Fused kernels reorder sums, so this is an order
# looser than export's fp32 check (MiniLM's fused graph: max abs 3e-6).
FUSION_TOLERANCE = {"atol": 2e-4, "rtol": 1e-3}


def _keep_if_faithful(before: Any, after: Any, notes: list[str], batches: list[dict]) -> tuple[Any, list[str]]:
    """The fused float graph when it computes what ``before`` does, else ``before`` with a note:
    a fuser bug must not pass for quantization error."""
    from onnxkit.core.compare import Comparator, Tolerance
    from onnxkit.runtime.session import make_session

    comp = Comparator(Tolerance(**FUSION_TOLERANCE))
    ref = make_session(before)
    try:
        cand = make_session(after)
        for feeds in batches:
            r = ref.run(feeds)
            comp.add(r, ignore_padding(feeds, r, cand.run(feeds)))
    except OnnxkitError as exc:
        # Seen: onnxscript's rewriter folding GPT-2's reshape + addmm into a Gemm on a rank-3 input.
        return before, [f"transformer fusion before quantizing not used: the fused graph does not run ({exc.message[:200]}); "
                        "quantized the graph as it is"]
    bad = [o for o in comp.results() if not o.passed]
    if not bad:
        return after, notes
    worst = max(bad, key=lambda o: o.max_abs or 0.0)
    return before, [f"transformer fusion before quantizing not used: the fused float graph differs from the input "
                    f"({worst.name}: max abs {worst.max_abs:.3g}); quantized the graph as it is"]


def _has_weight(node: Any, weights: set[str]) -> bool:
    # Only nodes with a constant weight are quantized (MatMulConstBOnly); activation x
    # activation MatMuls (attention scores) stay float whatever the budget says.
    return any(i in weights for i in node.input)


def left_in_float(base: Any, qmodel: Any) -> set[str]:
    """Names of ``base`` nodes that the quantizer passed through untouched (same name, op and
    inputs in ``qmodel``). ORT skips some weighted nodes on its own: an Attention with
    qkv_hidden_sizes (as the onnxscript BERT fuser writes it) never becomes QAttention."""
    out = {n.name: (n.domain or "", n.op_type, tuple(n.input)) for n in qmodel.graph.node if n.name}
    return {n.name for n in base.graph.node if n.name and out.get(n.name) == (n.domain or "", n.op_type, tuple(n.input))}


def _budget_loop(reference: Any, base: Any, qmodel: Any, err: ErrorMeasure, cfg: QuantConfig, excluded: dict[str, str], batches: list[dict],
                 metric: str, budget: float, work: Path) -> tuple[Any, ErrorMeasure]:
    """Exclude the most sensitive node, re-quantize, re-measure; until within budget."""
    candidates_ops = WEIGHTED_OPS if cfg.mode != "int4" else {"MatMul", "Gemm"}
    weights = {t.name for t in base.graph.initializer if len(t.dims) >= 2}
    # Excluding a node the quantizer already left in float changes nothing but spends a round
    # (MiniLM: 6 of the 12 went to unquantized Attention nodes). fp16 keeps node inputs as
    # they were, so "untouched" cannot be read from the graph there.
    skipped = left_in_float(base, qmodel) if cfg.mode in ("dynamic", "static") else set()
    best_q, best_err = qmodel, err
    for round_no in range(1, MAX_BUDGET_ROUNDS + 1):
        cands = [n for n in base.graph.node if n.op_type in candidates_ops and n.name not in excluded
                 and n.name not in skipped and _has_weight(n, weights)]
        if len(cands) <= 1:
            # Keeping the last quantized node in float would return a float model, not a
            # quantized one that meets the budget.
            break
        scores = rank_sensitivity(base, best_q, cands, batches[0])
        if scores and scores[0][1] > 0:
            node, score = scores[0]
            why = f"accuracy budget, round {round_no}: adds the most error (relative error +{score:.3g} at its output)"
        else:
            # No intermediate signal (names rewritten): try each candidate alone, keep the best.
            trial = []
            for n in cands[:24]:
                q = run_quantizer(base, cfg, list(excluded) + [n.name], work)
                trial.append((measure_error(reference, q, batches, metric).error, n.name))
            if not trial:
                break
            score, node = min(trial)
            why = f"accuracy budget, round {round_no}: excluding it alone gives the lowest error ({score:.3g})"
        excluded[node] = why
        q = run_quantizer(base, cfg, list(excluded), work)
        e = measure_error(reference, q, batches, metric)
        excluded[node] = why + f"; {metric} error after: {e.error:.4g}"
        log.info("budget round %d: kept %s in float, error %.4g", round_no, node, e.error)
        # Keep the latest even if it got worse: excluding more can only be undone by the user.
        best_q, best_err = q, e
        if e.error <= budget:
            break
    return best_q, best_err
