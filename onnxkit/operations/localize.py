"""Find the first node where a candidate ONNX model departs from a reference ONNX model.

Intermediate tensors that both graphs produce under the same name are exposed as extra
graph outputs, a chunk at a time in the candidate's topological order, and compared with the
validation tolerance on one batch of inputs. The first chunk holding a divergent tensor stops
the walk, so memory is bounded by one chunk of activations, never by the whole model.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.foundation.compare import Tolerance, compare_once
from onnxkit.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 64
# Above this, a modified model is handed to ONNX Runtime by path, beside its external data.
_BY_PATH_BYTES = 1_800_000_000


@dataclass
class TensorError:
    name: str
    role: str  # input / output
    kind: str  # activation, initializer, graph input, missing
    max_abs: float | None = None
    max_rel: float | None = None
    passed: bool | None = None
    shape: list[int] | None = None
    note: str = ""


@dataclass
class Localization:
    found: bool = False
    node: str | None = None
    op_type: str | None = None
    source_layer: str | None = None
    tensor: str | None = None
    inputs: list[TensorError] = field(default_factory=list)
    outputs: list[TensorError] = field(default_factory=list)
    shared_tensors: int = 0
    checked_tensors: int = 0
    reference: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_rows(self) -> list[list[str]]:
        rows = [["verdict", self.message]]
        if self.found:
            rows += [
                ["node", f"{self.node} ({self.op_type})"],
                ["source layer", self.source_layer or "-"],
                ["first divergent tensor", str(self.tensor)],
            ]
            for t in self.inputs + self.outputs:
                err = "-" if t.max_abs is None else f"max abs {t.max_abs:.3g}, max rel {t.max_rel:.3g}"
                state = {True: "ok", False: "DIFFERS", None: "?"}[t.passed]
                rows.append([f"{t.role} {t.name}", f"{t.kind}: {state} ({err}){' ' + t.note if t.note else ''}"])
        rows.append(["tensors checked", f"{self.checked_tensors} of {self.shared_tensors} shared by name"])
        return rows


def source_layer(node) -> str | None:
    """The source-framework layer a node came from, where the exporter recorded it."""
    props = {p.key: p.value for p in node.metadata_props}
    scopes = props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        with contextlib.suppress(ValueError, SyntaxError):
            names = [s for s in ast.literal_eval(scopes) if s]
            classes = ast.literal_eval(props.get("pkg.torch.onnx.class_hierarchy", "[]"))
            # The last scope is the aten op itself; the one before it is the module.
            if len(names) >= 2:
                cls = classes[-2] if len(classes) >= 2 else ""
                return names[-2] + (f" ({cls})" if cls else "")
            if names:
                return names[0]
    if props.get("namespace"):
        parts = [p.split(":")[0].strip() for p in props["namespace"].split("/")]
        parts = [p for p in parts if p]
        if len(parts) >= 2:
            return parts[-2]
    name = node.name or ""
    if "/" in name:
        parts = [p for p in name.strip("/").split("/")[:-1] if p]
        if parts:
            # torch.onnx (TorchScript) names nodes /module/sub/Op: module paths use dots.
            return ".".join(parts) if name.startswith("/") else "/".join(parts)
    return None


def _producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output if o}


def _initializers(graph) -> dict[str, Any]:
    return {t.name: t for t in graph.initializer}


class _Runner:
    """Runs one model with extra outputs exposed; by bytes when small, by path when large."""

    def __init__(self, model, folder: Path | None, providers: list[str] | None) -> None:
        self.model = model
        self.folder = folder
        self.providers = providers
        self.outputs = {o.name for o in model.graph.output}

    def run(self, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        import onnx

        from onnxkit.foundation.onnx_io import model_size_bytes
        from onnxkit.runtime.session import make_session

        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        for n in names:
            if n not in self.outputs:
                # Type left empty: ONNX Runtime infers it, and a wrong guess would fail the load.
                m.graph.output.append(onnx.ValueInfoProto(name=n))
        uses_external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
        if uses_external or model_size_bytes(m) > _BY_PATH_BYTES:
            # External data paths are relative to the model file: the modified graph must sit
            # in the original folder for a moment (a hidden name, removed right after).
            folder = self.folder or Path(tempfile.gettempdir())
            fd, tmp = tempfile.mkstemp(prefix=".onnxkit-localize-", suffix=".onnx", dir=folder)
            os.close(fd)
            try:
                onnx.save_model(m, tmp)
                session = make_session(tmp, providers=self.providers)
                return session.run(feeds, outputs=names)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        session = make_session(m, providers=self.providers)
        return session.run(feeds, outputs=names)


def _load(model_or_path, trust: bool) -> tuple[Any, Path | None]:
    from onnxkit.foundation.onnx_io import load_onnx

    if isinstance(model_or_path, (str, os.PathLike)):
        p = Path(model_or_path)
        loaded = load_onnx(p, load_external=False, trust=trust)
        return loaded.model, p.parent
    return model_or_path, None


def _tensor_error(name: str, role: str, kind: str, ref, cand, tol: Tolerance) -> TensorError:
    c = compare_once({name: ref}, {name: cand}, tol)[0]
    return TensorError(
        name=name, role=role, kind=kind, max_abs=c.max_abs, max_rel=c.max_rel, passed=c.passed,
        shape=c.cand_shape, note="; ".join(c.problems),
    )


def _diverges(ref, cand, tol: Tolerance) -> bool:
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.shape == cand.shape and ref.size == 0:
        return False  # empty shape tensors (Constant []) agree; the comparator refuses them as outputs
    return not compare_once({"t": ref}, {"t": cand}, tol)[0].passed


def _init_array(t, folder: Path | None) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(t, str(folder) if folder else "")


def localize(
    reference,
    candidate,
    feeds: dict[str, np.ndarray],
    tolerance: Tolerance,
    *,
    providers: list[str] | None = None,
    reference_providers: list[str] | None = None,
    chunk: int = DEFAULT_CHUNK,
    reference_label: str = "",
    trust: bool = False,
) -> Localization:
    """Walk the candidate's shared intermediate tensors in topological order; report the
    first node whose output is out of tolerance against the reference, with the error of its
    inputs and outputs. ``reference``/``candidate``: paths (external data kept on disk) or
    ModelProtos."""
    ref_model, ref_dir = _load(reference, trust)
    cand_model, cand_dir = _load(candidate, trust)
    ref_run = _Runner(ref_model, ref_dir, reference_providers or providers)
    cand_run = _Runner(cand_model, cand_dir, providers)
    ref_prod = _producers(ref_model.graph)
    cand_prod = _producers(cand_model.graph)
    graph_inputs = {i.name for i in cand_model.graph.input}
    feeds = {k: v for k, v in feeds.items() if k in graph_inputs}

    order: list[str] = []
    for node in cand_model.graph.node:
        order.extend(o for o in node.output if o and o in ref_prod and o not in order)
    result = Localization(shared_tensors=len(order), reference=reference_label)
    if not order:
        result.message = "the two graphs share no intermediate tensor by name; localization needs the same tensor names on both sides"
        return result

    found: str | None = None
    for start in range(0, len(order), max(1, chunk)):
        names = order[start : start + chunk]
        ref_out = ref_run.run(feeds, names)
        cand_out = cand_run.run(feeds, names)
        for n in names:
            result.checked_tensors += 1
            if _diverges(ref_out[n], cand_out[n], tolerance):
                found = n
                break
        del ref_out, cand_out
        if found:
            break
    if found is None:
        result.message = (
            f"none of the {len(order)} intermediate tensors shared by name diverges; the difference lies "
            "in nodes only one side has, or in the graph outputs"
        )
        return result

    node = cand_prod[found]
    result.found = True
    result.tensor = found
    result.node = node.name or f"(unnamed {node.op_type} producing {found})"
    result.op_type = node.op_type
    result.source_layer = source_layer(node) or source_layer(ref_prod[found])
    _describe_node(result, node, ref_model, cand_model, ref_dir, cand_dir, ref_prod, graph_inputs, ref_run, cand_run, feeds, tolerance)
    acts = [t.name for t in result.inputs if t.passed is False and t.kind != "initializer"]
    weights = [t.name for t in result.inputs if t.passed is False and t.kind == "initializer"]
    # An input that was not compared (the reference has no tensor of that name) is not
    # evidence of agreement: the divergence may come from before this node.
    unchecked = [t.name for t in result.inputs if t.passed is None]
    if weights:
        why = f"; its weight(s) {', '.join(weights)} differ between the models"
    elif acts:
        why = f"; its input(s) {', '.join(acts)} already differ (produced by nodes only one side names alike)"
    elif unchecked:
        compared = [t.name for t in result.inputs if t.passed is True]
        why = (f"; its input(s) {', '.join(unchecked)} could not be compared (no tensor of that name in the reference), "
               "so the difference may come from before this node"
               + (f" ({', '.join(compared)} agree)" if compared else ""))
    else:
        why = "; its inputs agree, so this node itself computes differently"
    result.message = f"first divergence at node {result.node} ({node.op_type}), output {found}{why}"
    return result


def _describe_node(result, node, ref_model, cand_model, ref_dir, cand_dir, ref_prod, graph_inputs, ref_run, cand_run, feeds, tol) -> None:
    ref_inits = _initializers(ref_model.graph)
    cand_inits = _initializers(cand_model.graph)
    activations = [n for n in node.input if n and n not in cand_inits and n not in graph_inputs and n in ref_prod]
    outs = [n for n in node.output if n and n in ref_prod]
    ref_vals = ref_run.run(feeds, activations + outs) if activations + outs else {}
    cand_vals = cand_run.run(feeds, activations + outs) if activations + outs else {}
    for n in node.input:
        if not n:
            continue
        if n in cand_inits:
            if n in ref_inits:
                try:
                    te = _tensor_error(n, "input", "initializer", _init_array(ref_inits[n], ref_dir), _init_array(cand_inits[n], cand_dir), tol)
                except (ValueError, OSError, InputError) as exc:
                    te = TensorError(n, "input", "initializer", note=f"not compared: {exc}")
            else:
                te = TensorError(n, "input", "initializer", note="only in the candidate")
        elif n in graph_inputs:
            te = TensorError(n, "input", "graph input", 0.0, 0.0, True, list(np.shape(feeds.get(n, ()))))
        elif n in cand_vals:
            te = _tensor_error(n, "input", "activation", ref_vals[n], cand_vals[n], tol)
        else:
            te = TensorError(n, "input", "missing", note="not produced under this name by the reference")
        result.inputs.append(te)
    for n in node.output:
        if n in cand_vals:
            result.outputs.append(_tensor_error(n, "output", "activation", ref_vals[n], cand_vals[n], tol))
