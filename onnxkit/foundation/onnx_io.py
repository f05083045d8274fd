"""The one loader and the one writer of ONNX files.

``load_onnx`` reads by path, checks what ``onnx.checker`` does not (external data that
escapes the model folder, truncated data files, opsets newer than the installed onnx,
custom domains, negative or absurd dimensions) and only then loads external data.
``save_onnx`` writes atomically and switches to external data above the protobuf limit.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxkit.foundation.files import atomic_output, describe_magic, preflight, read_head
from onnxkit.foundation.onnx_walk import iter_graphs, iter_nodes, iter_sparse, iter_tensors
from onnxkit.errors import EnvironmentProblem, InputError, UnsafeInput, offered

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
    problems: list[str] = field(default_factory=list)  # only with report_problems=True


def _iter_tensors(graph):  # one graph's dense tensors; the safety checks use onnx_walk.iter_tensors
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
    exact = _exact_nbytes(tensor)
    if exact is not None:
        return exact
    import onnx

    if tensor.data_type == onnx.TensorProto.STRING:
        return 0
    return int(np.prod(tensor.dims)) if len(tensor.dims) else 1  # unknown packing: a byte each


# Element types stored several to a byte, as (elements per byte).
_PACKED = {"INT4": 2, "UINT4": 2, "FLOAT4E2M1": 2, "INT2": 4, "UINT2": 4}


def _exact_nbytes(tensor) -> int | None:
    """The byte size of a tensor's data from its shape and type; None where the type does
    not say it (strings, undefined and unusually packed types)."""
    import onnx
    from onnx import helper

    n = math.prod(int(d) for d in tensor.dims)
    name = onnx.TensorProto.DataType.Name(tensor.data_type) if tensor.data_type in onnx.TensorProto.DataType.values() else ""
    if name in _PACKED:
        return -(-n // _PACKED[name])
    if name in ("", "UNDEFINED", "STRING") or name.startswith("FLOAT6"):
        return None
    try:
        return n * np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except Exception:  # a type this onnx has no numpy type for
        return None


def _allowed_roots(model_path: Path) -> list[Path]:
    """Folders external data may resolve into: the model's folder (resolved), and the
    folder of the model file itself once its own symlink is followed.

    The second root is what symlinked caches need: in a Hugging Face snapshot folder every
    file is a link into ``../../blobs/``, so ``model.onnx`` resolves into ``blobs/`` and so
    does its data. A link may never reach anywhere else (``~/.ssh``, ``/etc``).
    """
    roots = [model_path.parent.resolve()]
    real_parent = model_path.resolve().parent
    if real_parent not in roots:
        roots.append(real_parent)
    return roots


# ONNX Runtime reads these "locations" as a memory address in its own process (the offset
# is the address); a file has no business naming them.
_ORT_ADDRESS_TAGS = ("*/_ORT_MEM_ADDR_/*", "*/_ORT_NATIVE_ENDIAN_MEM_ADDR_/*")


def _external_info(tensor, where: str) -> dict[str, str]:
    info: dict[str, str] = {}
    for e in tensor.external_data:
        if e.key in info:
            # Which copy a reader honours is its own choice: the checked one may not be it.
            raise InputError(f"external data of {where} names {e.key!r} twice; a corrupt or hostile model")
        info[e.key] = e.value
    return info


def _check_location(loc: str, where: str, trust: bool) -> None:
    if not isinstance(loc, str):
        # protobuf hands back bytes for a string field that is not valid UTF-8: no file on
        # any system is named by it for sure, so it cannot be checked, nor opened.
        raise InputError(f"external data location of {where} is not valid UTF-8 ({bytes(loc)[:60]!r})")
    if not loc:
        raise InputError(f"{where} uses external data but names no file")
    if "\x00" in loc:
        raise InputError(f"external data location of {where} contains a NUL byte")
    if loc.startswith("*/_ORT_") or loc in _ORT_ADDRESS_TAGS:
        raise UnsafeInput(
            f"external data of {where} names ONNX Runtime's in-memory address tag ({loc}), which would read "
            "this process's memory; no model file may use it",
        )
    p = Path(loc)
    # Backslashes count as separators too: the same model may be opened on Windows.
    parts = loc.replace("\\", "/").split("/")
    if not trust and (p.is_absolute() or ".." in parts or loc.startswith(("\\", "/", "~")) or ":" in parts[0]):
        raise UnsafeInput(
            f"external data of {where} points outside the model folder ({loc}); "
            "pass --trust if you vouch for this file",
        )


def _check_external_data(model, model_path: Path, trust: bool, problems: list[str] | None = None) -> list[str]:
    """Validate every external-data reference; return the referenced file names.

    Rule (without --trust): a location is a relative path with no ``..``; the file it names,
    with every symlink followed, lies inside one of :func:`_allowed_roots`; it is a regular
    file with a single hard link (a second link may be a file from anywhere on the disk);
    and it is long enough for offset + length of the tensor. Every tensor-bearing field is
    visited (:mod:`onnxkit.foundation.onnx_walk`). A ``length`` that disagrees with the tensor's
    size is appended to ``problems`` when given (``inspect`` reports it), else refused.
    """
    from onnx import external_data_helper

    folder = model_path.parent
    files: dict[str, int] = {}
    roots = _allowed_roots(model_path)
    for where, tensor in iter_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = _external_info(tensor, where)
        loc = info.get("location", "")
        _check_location(loc, where, trust)
        target = folder / Path(loc)
        if not trust:
            real = target.resolve()
            if not any(real.is_relative_to(r) for r in roots):
                raise UnsafeInput(
                    f"external data file {loc} (of {where}) is a symbolic link to {real}, outside the model folder; "
                    "pass --trust if you vouch for it",
                )
        try:
            st = os.stat(target)
        except FileNotFoundError:
            raise InputError(f"external data file missing: {target} (needed by {where})") from None
        except OSError as exc:
            raise InputError(f"external data file cannot be opened: {target} ({exc.strerror})") from None
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"external data location is not a regular file: {target}")
        if not trust and st.st_nlink > 1:
            raise UnsafeInput(
                f"external data file {loc} has {st.st_nlink} hard links and may be a file from outside the "
                "model folder; pass --trust if you vouch for it",
            )
        try:
            offset = int(info.get("offset", 0) or 0)
            declared = int(info.get("length", 0) or 0)
        except ValueError:
            raise InputError(f"external data of {where} has a non-numeric offset or length") from None
        if offset < 0 or declared < 0:
            raise InputError(f"external data of {where} has a negative offset or length")
        expected = _exact_nbytes(tensor)
        if declared and expected is not None and declared != expected:
            msg = (f"external data of {where} declares length {declared:,} bytes, but its shape "
                   f"{list(tensor.dims)} and type need {expected:,}")
            if problems is None:
                raise InputError(msg + "; a corrupt or hostile model")
            problems.append(msg)
        length = declared or _tensor_nbytes(tensor)
        if offset + length > st.st_size:
            raise InputError(
                f"external data file {loc} is truncated: {where} needs bytes "
                f"{offset}..{offset + length}, the file has {st.st_size}",
            )
        files[loc] = st.st_size
    return sorted(files)


# A node whose constant shape input asks for more elements than this is refused before
# ONNX Runtime tries to allocate it: 2**34 float32 elements are 64 GiB in one tensor.
MAX_CONSTANT_ELEMENTS = 2**34
# ONNX Runtime releases support ai.onnx opsets at least up to this; above it, ask ORT.
_ORT_KNOWN_OPSET = 21


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _constant_values(model) -> dict[str, np.ndarray]:
    """Small integer/float constants by name (initializers and Constant nodes), for the
    static allocation check. Large or external tensors are skipped."""
    from onnx import numpy_helper
    from onnx.external_data_helper import uses_external_data

    out: dict[str, np.ndarray] = {}

    def take(name: str, tensor) -> None:
        if uses_external_data(tensor) or len(tensor.dims) > 1 or (tensor.dims and tensor.dims[0] > 64):
            return
        try:
            out[name] = np.asarray(numpy_helper.to_array(tensor))
        except Exception:  # malformed constant: the checker reports it
            pass

    for g in iter_graphs(model):
        for t in g.initializer:
            take(t.name, t)
    for n in iter_nodes(model):  # function bodies too: a node there allocates like any other
        if n.op_type != "Constant" or n.domain not in ("", "ai.onnx") or not n.output:
            continue
        for a in n.attribute:
            if a.name == "value" and a.HasField("t"):
                take(n.output[0], a.t)
            elif a.name == "value_ints":
                out[n.output[0]] = np.array(list(a.ints), np.int64)
            elif a.name in ("value_int", "value_float"):
                out[n.output[0]] = np.array(a.i if a.name == "value_int" else a.f)
    return out


def _product(values: np.ndarray) -> int:
    # Python ints: a crafted shape must not overflow int64 into a small or negative number.
    return math.prod(int(v) for v in np.asarray(values).reshape(-1))


def _requested_elements(node, consts: dict[str, np.ndarray]) -> tuple[int, int] | None:
    """(elements, itemsize) a shape-making node would allocate, when its inputs are constant."""
    from onnx import helper

    def const(i: int) -> np.ndarray | None:
        return consts.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    op = node.op_type
    if op == "ConstantOfShape" and (shape := const(0)) is not None:
        if (np.asarray(shape) < 0).any():
            raise InputError(f"node {node.name or op!r}: ConstantOfShape with a negative dimension {shape.tolist()}")
        itemsize = 4
        for a in node.attribute:
            if a.name == "value" and a.HasField("t"):
                with contextlib.suppress(Exception):
                    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(a.t.data_type)).itemsize
        return _product(shape), itemsize
    if op == "Expand" and (shape := const(1)) is not None:
        return _product(np.maximum(np.asarray(shape), 1)), 1
    if op == "Tile" and (reps := const(1)) is not None:
        return _product(np.maximum(np.asarray(reps), 1)), 1
    if op == "Resize" and (sizes := const(3)) is not None:
        return _product(np.maximum(np.asarray(sizes), 0)), 1
    if op == "Range":
        start, limit, delta = const(0), const(1), const(2)
        if start is None or limit is None or delta is None:
            return None
        d = float(np.asarray(delta).reshape(-1)[0]) if np.asarray(delta).size else 0.0
        if d == 0 or not math.isfinite(d):
            raise InputError(f"node {node.name or op!r}: Range with a zero or non-finite step")
        span = (float(np.asarray(limit).reshape(-1)[0]) - float(np.asarray(start).reshape(-1)[0])) / d
        if not math.isfinite(span):
            raise InputError(f"node {node.name or op!r}: Range with a non-finite length")
        return max(math.ceil(span), 0), np.asarray(start).dtype.itemsize
    if op in ("RandomNormal", "RandomUniform"):
        for a in node.attribute:
            if a.name == "shape":
                return _product(np.maximum(np.array(list(a.ints), dtype=object), 1)), 4
    return None


def _check_allocations(model) -> None:
    """Refuse nodes whose constant inputs ask for an absurd tensor (a 4 TiB ConstantOfShape
    passes onnx.checker and then takes the machine down in ONNX Runtime)."""
    consts = _constant_values(model)
    ram = _physical_memory()
    for node in iter_nodes(model):
        if node.domain not in ("", "ai.onnx"):
            continue
        req = _requested_elements(node, consts)
        if req is None:
            continue
        elements, itemsize = req
        nbytes = elements * itemsize
        if elements > MAX_CONSTANT_ELEMENTS or (ram is not None and nbytes > ram):
            from onnxkit.results import fmt_bytes

            raise InputError(
                f"node {node.name or node.op_type!r} ({node.op_type}) would allocate {elements:,} elements "
                f"(at least {fmt_bytes(nbytes)}) from constant inputs; refusing a corrupt or hostile model",
            )


@functools.lru_cache(maxsize=8)
def _ort_runs_opset(opset: int) -> bool | None:
    """Whether the installed onnxruntime loads an ai.onnx ``opset`` model, probed with a
    one-node model (milliseconds); None when onnxruntime is not installed."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    ort.set_default_logger_severity(4)
    g = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(onnx.IR_VERSION, 10)
    try:
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


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
            used = any(n.domain == imp.domain for n in iter_nodes(model))
            local = any(f.domain == imp.domain for f in model.functions)
            if used and not local:
                raise InputError(
                    f"model uses custom operator domain {imp.domain!r}; "
                    + ("pass --custom-op-library with the library that implements it" if offered("--custom-op-library")
                       else "this command cannot load custom operators (onnxkit inspect --custom-op-library can)"),
                )
        if imp.domain in ("", "ai.onnx") and imp.version > _ORT_KNOWN_OPSET:
            if _ort_runs_opset(int(imp.version)) is False:
                raise EnvironmentProblem(
                    f"model uses opset {imp.version}, which the installed onnxruntime does not run: "
                    "upgrade onnxruntime, or re-export with a lower --opset",
                )
    if not any(g.node for g in _iter_graphs(model.graph)) and not model.graph.output:
        raise InputError("not an ONNX model: the file parsed but holds no graph (is this an ONNX file?)")
    # Sparse tensors count by their dense shape: ONNX Runtime densifies sparse initializers.
    shaped = list(iter_tensors(model)) + list(iter_sparse(model))
    for where, tensor in shaped:
        if any(d < 0 for d in tensor.dims):
            raise InputError(f"{where} has a negative dimension {list(tensor.dims)}")
        if any(d > ABSURD_DIM for d in tensor.dims) or math.prod(tensor.dims) > MAX_CONSTANT_ELEMENTS:
            raise InputError(f"{where} has an absurd shape {list(tensor.dims)}")
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.HasField("tensor_type"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value < 0:
                    raise InputError(f"{vi.name!r} declares a negative dimension {d.dim_value}")
    _check_allocations(model)
    return warnings


def declared_io_problems(model) -> list[str]:
    """Graph inputs and outputs declared with a shape no real model has (a fixed dim over
    ABSURD_DIM, or more than ABSURD_DIM elements): feeding such an input would need
    exabytes, so ``run`` refuses it and ``inspect`` reports it."""
    problems = []
    for kind, vis in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in vis:
            if not vi.type.HasField("tensor_type"):
                continue
            fixed = [d.dim_value for d in vi.type.tensor_type.shape.dim if d.HasField("dim_value")]
            if any(v > ABSURD_DIM for v in fixed) or math.prod(fixed) > ABSURD_DIM:
                shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
                problems.append(f"{kind} {vi.name!r} is declared with an absurd shape {shape} (over 2^40 elements)")
    return problems


def _load_external_data(model, model_path: Path) -> None:
    """Read every external tensor into the model, from the files _check_external_data
    accepted. onnx's own loader refuses any symlink, which would reject symlinked caches
    that the rule above allows; here reads are bounded by the checked offset and length."""
    from onnx import TensorProto, external_data_helper

    folder = model_path.parent
    handles: dict[str, object] = {}
    try:
        for where, tensor in iter_tensors(model):
            if not external_data_helper.uses_external_data(tensor):
                continue
            info = _external_info(tensor, where)
            loc = info["location"]
            offset = int(info.get("offset", 0) or 0)
            length = int(info.get("length", 0) or 0) or _tensor_nbytes(tensor)
            fh = handles.get(loc)
            if fh is None:
                fh = handles[loc] = open(folder / loc, "rb")  # noqa: SIM115 - closed below
            fh.seek(offset)
            data = fh.read(length)
            if len(data) != length:
                raise InputError(f"external data file {loc} changed while reading: short read for {where}")
            tensor.raw_data = data
            tensor.data_location = TensorProto.DEFAULT
            del tensor.external_data[:]
    except OSError as exc:
        raise InputError(f"cannot read external data of {model_path}: {exc.strerror or exc}") from None
    finally:
        for fh in handles.values():
            fh.close()


def load_onnx(
    path: str | os.PathLike[str],
    *,
    load_external: bool = True,
    trust: bool = False,
    allow_custom_domains: bool = False,
    report_problems: bool = False,
) -> LoadedOnnx:
    """Load an ONNX model by path after pre-flight and safety checks.

    A model that lies about itself (an input declared with 2^62 rows, an external-data
    ``length`` that disagrees with the tensor's size) is refused (exit 2); with
    ``report_problems`` (``inspect``) the lies are listed in ``problems`` instead, so the
    rest of the model can still be described. Safety refusals are never downgraded."""
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
    problems = declared_io_problems(model)
    if problems and not report_problems:
        raise InputError(problems[0] + "; a corrupt or hostile model")
    external = _check_external_data(model, p, trust, problems if report_problems else None)
    if external and load_external:
        _load_external_data(model, p)
    return LoadedOnnx(model=model, path=p, external_files=external, warnings=warnings, problems=problems)


def model_size_bytes(model) -> int:
    return sum(_tensor_nbytes(t) for _, t in iter_tensors(model))


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
        for _, t in iter_tensors(m2):
            for e in t.external_data:
                if e.key == "location":
                    e.value = data_name
        onnx.save_model(m2, str(tmp_model))
    return dest

