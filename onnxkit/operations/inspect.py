"""What is inside an ONNX model: ``onnxkit inspect``."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxkit.foundation.files import preflight
from onnxkit.foundation.onnx_io import _iter_graphs, _tensor_nbytes, load_onnx
from onnxkit.foundation.onnx_walk import iter_tensors
from onnxkit.foundation.spec import outputs_from_onnx, specs_from_onnx
from onnxkit.results import Result, Table, fmt_bytes


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str | None]


@dataclass
class InspectResult(Result):
    path: str = ""
    file_size: int = 0
    ir_version: int = 0
    producer: str = ""
    producer_version: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    node_count: int = 0
    op_histogram: dict[str, int] = field(default_factory=dict)
    parameter_count: int = 0
    parameter_bytes: dict[str, int] = field(default_factory=dict)
    external_data: list[str] = field(default_factory=list)
    external_data_bytes: int = 0
    metadata: dict[str, str] = field(default_factory=dict)
    checker_ok: bool = True
    checker_problems: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        def shape(t: TensorInfo) -> str:
            return "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"

        overview = Table(
            f"Model {Path(self.path).name}",
            ["property", "value"],
            [
                ["file size", fmt_bytes(self.file_size) + (f" (+{fmt_bytes(self.external_data_bytes)} external)" if self.external_data else "")],
                ["IR version", str(self.ir_version)],
                ["opsets", ", ".join(f"{d or 'ai.onnx'}={v}" for d, v in self.opsets.items())],
                ["producer", f"{self.producer} {self.producer_version}".strip() or "-"],
                ["nodes", f"{self.node_count:,}"],
                ["parameters", f"{self.parameter_count:,} (" + ", ".join(f"{k}: {fmt_bytes(v)}" for k, v in self.parameter_bytes.items()) + ")"],
                ["external data", ", ".join(self.external_data) or "-"],
                ["checker", "ok" if self.checker_ok else "; ".join(self.checker_problems)],
            ],
        )
        io = Table(
            "Inputs and outputs",
            ["kind", "name", "dtype", "shape"],
            [["input", t.name, t.dtype, shape(t)] for t in self.inputs] + [["output", t.name, t.dtype, shape(t)] for t in self.outputs],
        )
        ops = Table("Operators", ["op type", "count"], [[k, v] for k, v in self.op_histogram.items()])
        tables = [overview, io, ops]
        if self.metadata:
            tables.append(Table("Metadata", ["key", "value"], [[k, v] for k, v in self.metadata.items()]))
        return tables


def _dtype_name(elem_type: int) -> str:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return helper.tensor_dtype_to_string(elem_type).replace("TensorProto.", "").lower()


def check_model_file(path: Path, external_files: list[str] | None = None, *, trust: bool = False) -> list[str]:
    """``onnx.checker`` full check with shape inference, by path (works over 2 GB).

    onnx's checker refuses every symlinked external-data file, even those onnxkit's own
    rule accepts (symlinked cache layouts); such models are checked in memory instead."""
    import onnx

    from onnxkit.foundation.onnx_io import EXTERNAL_DATA_THRESHOLD, load_onnx, model_size_bytes

    problems: list[str] = []
    linked = any((path.parent / f).is_symlink() for f in external_files or [])
    try:
        if linked:
            model = load_onnx(path, trust=trust, report_problems=True).model
            if model_size_bytes(model) > EXTERNAL_DATA_THRESHOLD:
                return ["checker skipped: external data is symlinked and the model is over 2 GB"]
            onnx.checker.check_model(model, full_check=True)
        else:
            onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        problems.append(str(exc).strip().splitlines()[0])
    except onnx.shape_inference.InferenceError as exc:
        problems.append("shape inference: " + str(exc).strip().splitlines()[0])
    except Exception as exc:  # the checker's C++ side raises plain errors for odd files
        problems.append(f"{type(exc).__name__}: " + (str(exc).strip().splitlines() or [""])[0])
    return problems


def inspect_model(
    path: str | os.PathLike[str], *, trust: bool = False, check: bool = True, custom_op_library: str | os.PathLike[str] | None = None,
) -> InspectResult:
    """Describe an ONNX model without running it. Never imports a training framework."""
    if custom_op_library is not None:
        preflight(custom_op_library, what="custom-op library")
    loaded = load_onnx(
        path, load_external=False, trust=trust, allow_custom_domains=custom_op_library is not None, report_problems=True,
    )
    m = loaded.model
    hist: Counter[str] = Counter()
    nodes = 0
    for g in _iter_graphs(m.graph):
        for n in g.node:
            nodes += 1
            hist[f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type] += 1
    params = 0
    per_dtype: Counter[str] = Counter()
    for where, t in iter_tensors(m):
        if where.endswith("(sparse indices)"):
            continue  # positions, not parameters
        params += int(np.prod(t.dims)) if len(t.dims) else 1
        per_dtype[_dtype_name(t.data_type)] += _tensor_nbytes(t)
    p = Path(path)
    ext_bytes = sum(os.path.getsize(p.parent / f) for f in loaded.external_files)

    def infos(specs) -> list[TensorInfo]:
        return [TensorInfo(s.name, s.dtype.name if s.dtype != np.dtype(object) else "non-tensor", list(s.shape)) for s in specs]

    # The model's lies are reported with or without --no-check: they are not the checker's.
    problems = list(loaded.problems) + (check_model_file(p, loaded.external_files, trust=trust) if check else [])
    return InspectResult(
        command="inspect",
        passed=not problems,
        path=str(p),
        file_size=os.path.getsize(p),
        ir_version=int(m.ir_version),
        producer=m.producer_name,
        producer_version=m.producer_version,
        opsets={imp.domain or "ai.onnx": int(imp.version) for imp in m.opset_import},
        inputs=infos(specs_from_onnx(m)),
        outputs=infos(outputs_from_onnx(m)),
        node_count=nodes,
        op_histogram=dict(hist.most_common()),
        parameter_count=params,
        parameter_bytes=dict(per_dtype),
        external_data=loaded.external_files,
        external_data_bytes=ext_bytes,
        metadata={p_.key: p_.value for p_ in m.metadata_props},
        checker_ok=not problems,
        checker_problems=problems,
        notes=loaded.warnings + list(loaded.problems) + [f"onnx.checker: {x}" for x in problems[len(loaded.problems):]],
    )
