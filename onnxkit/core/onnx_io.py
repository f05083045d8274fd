"""The one loader and the one writer of ONNX files.

``load_onnx`` reads by path, checks what ``onnx.checker`` does not (external data that
escapes the model folder, truncated data files, opsets newer than the installed onnx,
custom domains, negative or absurd dimensions) and only then loads external data.
``save_onnx`` writes atomically and switches to external data above the protobuf limit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxkit.core.files import atomic_output, describe_magic, preflight, read_head
from onnxkit.errors import EnvironmentProblem, InputError, UnsafeInput

log = logging.getLogger(__name__)

# protobuf cannot serialize a message over 2 GiB; stay clear of it.
PROTOBUF_LIMIT = 2**31 - 1
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# A single tensor dimension above this is not a real model; it is a crafted or corrupt file.
ABSURD_DIM = 2**40
STANDARD_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training", "ai.onnx.training"}


@dataclass
class LoadedOnnx:
    """A parsed model plus what was learned while loading it."""

    model: object  # onnx.ModelProto; typed loosely so this module imports onnx lazily
    path: Path
    external_files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _iter_tensors(graph):  # initializers and Constant attributes, subgraphs included
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _iter_tensors(attr.g)
            for g in attr.graphs:
                yield from _iter_tensors(g)


def _iter_graphs(graph):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _iter_graphs(attr.g)
            for g in attr.graphs:
                yield from _iter_graphs(g)


def _tensor_nbytes(tensor) -> int:
    import onnx
    from onnx import helper

    n = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
    if tensor.data_type == onnx.TensorProto.STRING:
        return 0
    try:
        np_dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        itemsize = np.dtype(np_dtype).itemsize
    except Exception:  # int4 & co have no numpy type
        itemsize = 1
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * itemsize


def _check_external_data(model, folder: Path, trust: bool) -> list[str]:
    """Validate every external-data reference; return the referenced file names.

    Rule: a location must be a relative path that, resolved, stays inside the model's
    folder. A symlink inside the folder is followed only if its target also stays inside
    the (resolved) folder, which is what symlinked cache layouts (a snapshot folder of
    links into a blob folder beside it) need when the model is opened through its
    resolved folder; anything else needs --trust.
    """
    from onnx import external_data_helper

    files: dict[str, int] = {}
    root = folder.resolve()
    for tensor in _iter_tensors(model.graph):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        if not loc:
            raise InputError(f"tensor {tensor.name!r} uses external data but names no file")
        p = Path(loc)
        if not trust:
            if p.is_absolute() or ".." in p.parts:
                raise UnsafeInput(
                    f"external data of tensor {tensor.name!r} points outside the model folder ({loc}); "
                    "pass --trust if you vouch for this file",
                )
            target = folder / p
            if target.is_symlink() or any(par.is_symlink() for par in (folder / p).parents if par != folder and root in par.resolve().parents):
                real = target.resolve()
                if not real.is_relative_to(root):
                    raise UnsafeInput(
                        f"external data file {loc} is a symbolic link to {real}, outside the model folder; "
                        "pass --trust if you vouch for it",
                    )
        target = folder / p
        try:
            st = os.stat(target)
        except FileNotFoundError:
            raise InputError(f"external data file missing: {target} (needed by tensor {tensor.name!r})") from None
        if not os.path.isfile(target):
            raise InputError(f"external data location is not a regular file: {target}")
        if not trust and st.st_nlink > 1:
            raise UnsafeInput(
                f"external data file {loc} has {st.st_nlink} hard links and may be a file from outside the "
                "model folder; pass --trust if you vouch for it",
            )
        offset = int(info.get("offset", 0) or 0)
        length = int(info.get("length", 0) or 0) or _tensor_nbytes(tensor)
        if offset < 0 or length < 0:
            raise InputError(f"external data of tensor {tensor.name!r} has a negative offset or length")
        if offset + length > st.st_size:
            raise InputError(
                f"external data file {loc} is truncated: tensor {tensor.name!r} needs bytes "
                f"{offset}..{offset + length}, the file has {st.st_size}",
            )
        files[loc] = st.st_size
    return sorted(files)


def _check_structure(model, allow_custom_domains: bool) -> list[str]:
    import onnx

    warnings: list[str] = []
    if model.ir_version <= 0:
        raise InputError("not an ONNX model: no IR version (is this an ONNX file?)")
    if model.ir_version > onnx.IR_VERSION:
        raise EnvironmentProblem(
            f"model IR version {model.ir_version} is newer than the installed onnx supports ({onnx.IR_VERSION}); "
            "upgrade onnx and onnxruntime",
        )
    max_opset = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > max_opset:
            raise EnvironmentProblem(
                f"model uses opset {imp.version}; the installed onnx supports up to {max_opset}: "
                "upgrade onnx and onnxruntime, or re-export with a lower --opset",
            )
        if imp.domain not in STANDARD_DOMAINS and not allow_custom_domains:
            used = any(n.domain == imp.domain for g in _iter_graphs(model.graph) for n in g.node)
            local = any(f.domain == imp.domain for f in model.functions)
            if used and not local:
                raise InputError(
                    f"model uses custom operator domain {imp.domain!r}; pass --custom-op-library with the "
                    "library that implements it",
                )
    if not any(g.node for g in _iter_graphs(model.graph)) and not model.graph.output:
        raise InputError("not an ONNX model: the file parsed but holds no graph (is this an ONNX file?)")
    for tensor in _iter_tensors(model.graph):
        if any(d < 0 for d in tensor.dims):
            raise InputError(f"tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}")
        if any(d > ABSURD_DIM for d in tensor.dims):
            raise InputError(f"tensor {tensor.name!r} has an absurd dimension {list(tensor.dims)}")
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value < 0:
                    raise InputError(f"{vi.name!r} declares a negative dimension {d.dim_value}")
    return warnings


def load_onnx(
    path: str | os.PathLike[str],
    *,
    load_external: bool = True,
    trust: bool = False,
    allow_custom_domains: bool = False,
) -> LoadedOnnx:
    """Load an ONNX model by path after pre-flight and safety checks."""
    import onnx
    from google.protobuf.message import DecodeError

    p = preflight(path, what="model")
    head = read_head(p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        what = describe_magic(head)
        hint = f"this looks like {what}, not ONNX" if what else f"the file is truncated or not ONNX ({type(exc).__name__})"
        raise InputError(f"cannot parse {p} as ONNX: {hint}") from None
    except RecursionError:
        raise InputError(f"cannot parse {p} as ONNX: nesting too deep (a corrupt or hostile file)") from None
    if not model.HasField("graph") or model.ir_version == 0:
        what = describe_magic(head)
        raise InputError(f"not an ONNX model: {p}" + (f" (this looks like {what})" if what else ""))
    warnings = _check_structure(model, allow_custom_domains)
    external = _check_external_data(model, p.parent, trust)
    if external and load_external:
        from onnx import external_data_helper

        external_data_helper.load_external_data_for_model(model, str(p.parent))
    return LoadedOnnx(model=model, path=p, external_files=external, warnings=warnings)


def model_size_bytes(model) -> int:
    return sum(_tensor_nbytes(t) for t in _iter_tensors(model.graph))


def save_onnx(model, dest: str | os.PathLike[str], *, external: bool | None = None) -> Path:
    """Write ``model`` to ``dest`` atomically; tensors go to ``<dest>.data`` beside it when
    the model would not fit in one protobuf (or when ``external`` is True)."""
    import onnx

    dest = Path(dest)
    if external is None:
        external = model_size_bytes(model) > EXTERNAL_DATA_THRESHOLD
    if not external:
        with atomic_output(dest) as tmp:
            onnx.save_model(model, str(tmp))
        return dest
    data_name = dest.name + ".data"
    data_dest = dest.parent / data_name
    # Write both files under temporary names, then rename the data first: a reader that
    # sees the new .onnx always finds its data.
    with atomic_output(dest) as tmp_model, atomic_output(data_dest) as tmp_data:
        tmp_data.unlink(missing_ok=True)
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(
            copy,
            str(tmp_model),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=tmp_data.name,
            size_threshold=1024,
        )
        # Re-point the model at the final data file name.
        m2 = onnx.load(str(tmp_model), load_external_data=False)
        for t in _iter_tensors(m2.graph):
            for e in t.external_data:
                if e.key == "location":
                    e.value = data_name
        onnx.save_model(m2, str(tmp_model))
    return dest

