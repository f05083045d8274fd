"""The engines: ONNX Runtime's quantizers (dynamic, static QDQ, int4, fp16) behind one call."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxkit.foundation.chatter import library_chatter

from onnxkit.errors import ConversionError, OnnxkitError
from onnxkit.operations.quantize.calibration import STREAMED_CALIBRATION, _calibration_reader
from onnxkit.operations.quantize.checks import gemm_to_matmul
from onnxkit.operations.quantize.options import QuantConfig
from onnxkit.operations.quantize.pairsafe import widen_matmul_weights

log = logging.getLogger(__name__)


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
            with warnings.catch_warnings(), _inside(workdir), library_chatter():
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
    from onnxkit.foundation.hostfacts import host_facts

    return host_facts().x86_int8_dot


def default_reduce_range() -> bool:
    # Measured: on AVX2 CPUs without VNNI, ORT's u8 x s8 kernels saturate 16-bit partial sums;
    # a tiny MLP's dynamic int8 max error was 0.196 at full range vs 0.010 with reduce_range.
    return cpu_has_vnni() is False


def prune_unused_opsets(model: Any) -> None:
    """Drop opset imports no node uses: ORT's pre-processing declares every domain it
    knows (ai.onnx.training, org.pytorch.aten, ...), which misleads readers and checkers."""
    from onnxkit.foundation.onnx_io import _iter_graphs

    used = {n.domain or "" for g in _iter_graphs(model.graph) for n in g.node}
    used |= {f.domain for f in model.functions}
    keep = [imp for imp in model.opset_import if (imp.domain or "") in used or imp.domain in ("", "ai.onnx")]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


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
        with warnings.catch_warnings(), _inside(workdir), library_chatter():
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
                qmodel = onnx.load(str(out))
                if cfg.reduce_range and cfg.pair_safe and cfg.weight_type == "int8":
                    # 7 bits are what the saturating pair lanes need only in the worst case;
                    # MatMul weights get the widest range that still fits them.
                    widen_matmul_weights(model, qmodel)
                return qmodel
            if cfg.mode == "static":
                assert cfg.calib is not None
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[cfg.calib_method]
                quantize_static(str(src), str(out), _calibration_reader(cfg.calib),
                                quant_format=QuantFormat.QDQ if cfg.fmt == "qdq" else QuantFormat.QOperator,
                                per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                                activation_type=QuantType.QInt8 if cfg.activation_type == "int8" else QuantType.QUInt8, weight_type=wtype,
                                nodes_to_exclude=list(exclude), calibrate_method=method,
                                use_external_data_format=large, extra_options={"MatMulConstBOnly": True, **STREAMED_CALIBRATION})
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
