"""torch.export programs (.pt2): the safety audit, the pytree output types, and loading.

torch.export.load is not a plain data reader: it unpickles tensor subclasses and opaque
constants, sympify()s (eval()s) size expressions, exec()s guard code and resolves node
targets by getattr from ``torch``, ``operator`` and ``math``. Without --trust, every one
of those strings is checked here before torch sees the file.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import logging
import pickle
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.spec import InputSpec
from onnxkit.errors import EnvironmentProblem, InputError, UnsafeInput, UsageError
from onnxkit.frameworks.base import LoadOptions
from onnxkit.frameworks.pt2_archive import interpreted_members, is_program, layout_refusals
from onnxkit.frameworks.pt2_ops import generator_arguments, target_refusal

log = logging.getLogger(__name__)


def _torch():
    return require("torch")


# sympy expressions in a .pt2 are sympify()ed, i.e. eval()ed: allow only the printed
# form of symbolic sizes: Capitalized sympy constructors, keyword flags, numbers and
# identifier-like string literals.
_SYM_TOKEN = re.compile(
    r"\s+|[A-Z][A-Za-z]*(?=\()|[a-z_]+(?==)|'[A-Za-z][A-Za-z0-9_]*'|\d+(\.\d+)?(e-?\d+)?|[-+*/(),=]|True|False|oo|[a-z]\d+",
)
# Guards are exec()ed when the program is turned back into a module: allow comparisons
# of input sizes and numbers, nothing else.
_GUARD_ATTRS = {"size", "stride", "storage_offset", "dim", "shape", "isnan", "inf"}
_GUARD_NAMES = {"L", "math"}
_GUARD_NODES = (
    ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Subscript, ast.Load,
    ast.Name, ast.Attribute, ast.Call, ast.And, ast.Or, ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd,
)
# Output types transformers defines and registers with pytree when their module is
# imported: the shared outputs module, and each model's own modeling module.
# TensorFlow and Flax modeling modules are left out: a torch program never returns their types.
_TRANSFORMERS_OUTPUT_MODULE = re.compile(
    r"transformers\.(modeling_outputs|models\.[a-z][a-z0-9_]*\.modeling_(?!tf_|flax_)[a-z][a-z0-9_]*)",
)


def _safe_sym_expr(text: str) -> bool:
    pos = 0
    while pos < len(text):
        m = _SYM_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            return False
        pos = m.end()
    return "__" not in text


def _safe_guard(code: str) -> bool:
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return False
        if isinstance(node, ast.Name) and node.id not in _GUARD_NAMES:
            return False
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRS:
            return False
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Attribute):
            return False
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, bool, type(None))):
            return False
    return True


def _safe_target(target: str, _ops_attrs: object = None) -> bool:
    """Whether the node target may be resolved and run (the rule is in pt2_ops)."""
    return target_refusal(target) is None


def _program_documents(path: Path) -> Iterator[tuple[str, Any]]:
    """(member name, parsed JSON or None when invalid) for each serialized program, every
    copy torch could read."""
    for name, data in interpreted_members(path):
        if is_program(name):
            try:
                yield name, json.loads(data)
            except ValueError:
                yield name, None


def audit_pt2(path: Path) -> list[str]:
    """Reasons why loading ``path`` with torch.export.load could run code; empty if none.

    torch.export.load unpickles tensor subclasses and opaque constants, sympify()s size
    expressions and exec()s guard code, all read from the file.
    """
    reasons = layout_refusals(path)
    if reasons:
        return reasons[:5]
    for name, data in interpreted_members(path):
        if name.endswith(("_weights_config.json", "_constants_config.json")):
            reasons += _config_refusals(name, data)
    for name, program in _program_documents(path):
        if not isinstance(program, dict):
            reasons.append(f"{name} is not valid JSON")
            continue
        for code in program.get("guards_code") or []:
            if not isinstance(code, str) or not _safe_guard(code):
                reasons.append(f"guard code {str(code)[:80]!r} is not a plain size check")
        for kind, value in _walk_strings(program):
            if kind == "expr" and not _safe_sym_expr(value):
                reasons.append(f"size expression {value[:80]!r} is not a plain sympy expression")
            elif kind in ("target", "operator") and (why := target_refusal(value)):
                reasons.append(f"{'node target' if kind == 'target' else 'operator argument'} {value[:80]!r} {why}")
            elif kind == "generator":
                reasons.append(f"node {value[:80]!r} passes a random generator object")
    return list(dict.fromkeys(reasons))[:5]


def _config_refusals(name: str, data: bytes) -> list[str]:
    try:
        config = json.loads(data).get("config", {})
    except (ValueError, AttributeError):
        return [f"{name} is not valid JSON"]
    if not isinstance(config, dict):
        return [f"{name} is malformed"]
    reasons = []
    for fqn, meta in config.items():
        if not isinstance(meta, dict):
            reasons.append(f"{name}: malformed entry for {fqn}")
        elif meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
            reasons.append(f"{fqn} is stored as a pickled object")
    return reasons


def _walk_strings(obj: Any) -> Iterator[tuple[str, str]]:
    """("expr" | "target" | "operator" | "generator", text) for each string torch would
    evaluate or resolve: size expressions, node targets, operators passed as arguments,
    and nodes that pass a value for a Generator argument."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            if isinstance(o.get("expr_str"), str):
                yield "expr", o["expr_str"]
            if "as_operator" in o:
                yield "operator", o["as_operator"] if isinstance(o["as_operator"], str) else repr(o["as_operator"])
            if "inputs" in o and "target" in o:
                target = o["target"] if isinstance(o["target"], str) else repr(o["target"])
                yield "target", target
                if _passes_generator(target, o["inputs"]):
                    yield "generator", target
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


def _passes_generator(target: str, inputs: Any) -> bool:
    """Whether a node gives one of its operator's Generator arguments something other
    than None (a generator object is state shared outside the program)."""
    names = generator_arguments(target) if target.startswith("torch.ops.") else set()
    if not names or not isinstance(inputs, list):
        return False
    for item in inputs:
        if isinstance(item, dict) and item.get("name") in names:
            arg = item.get("arg")
            if not (isinstance(arg, dict) and set(arg) == {"as_none"}):
                return True
    return False


# ---------------------------------------------------------------- pytree output types

def pytree_type_names(path: Path) -> set[str]:
    """Every Python type the program's input/output tree specs name (as "module.Class")."""
    names: set[str] = set()
    for _, program in _program_documents(path):
        stack: list[Any] = [program]
        while stack:
            o = stack.pop()
            if isinstance(o, dict):
                for key in ("in_spec", "out_spec"):
                    if isinstance(o.get(key), str):
                        with contextlib.suppress(ValueError):
                            stack.append(json.loads(o[key]))
                if "children_spec" in o and isinstance(o.get("type"), str):
                    names.add(o["type"])
                stack.extend(v for k, v in o.items() if k not in ("in_spec", "out_spec"))
            elif isinstance(o, list):
                stack.extend(o)
    return names


def register_output_types(path: Path, *, trust: bool) -> None:
    """Make the tree types the file names known to torch's pytree before torch.export.load.

    Types torch already knows need nothing. A transformers ``ModelOutput`` (BERT's
    BaseModelOutputWithPoolingAndCrossAttentions, CLIP's CLIPOutput...) is registered
    by transformers when the module defining it is imported; that module is imported only
    when the name has the form of a transformers outputs or modeling module, and the class
    must then really be a ModelOutput subclass defined there. Any other name is refused
    without importing anything: an untrusted file must not choose what gets imported.
    With --trust, names that do not qualify are left to torch, which reports them.
    """
    from torch.utils import _pytree as pytree

    for name in sorted(pytree_type_names(path)):
        if name in pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE:
            continue
        why = _register_transformers_output(name)
        if why and not trust:
            raise UnsafeInput(
                f"{path.name} names the Python type {name!r} for its inputs or outputs; {why}",
                hint="onnxkit imports only transformers ModelOutput types for an untrusted .pt2; pass --trust if you vouch for this file",
            )


def _register_transformers_output(name: str) -> str | None:
    """Import the transformers module defining the ModelOutput ``name``; None when it is
    registered now, else why it was not (raises when transformers cannot provide it)."""
    from torch.utils import _pytree as pytree

    module_name, _, cls_name = name.rpartition(".")
    if not _TRANSFORMERS_OUTPUT_MODULE.fullmatch(module_name) or not cls_name.isidentifier() or cls_name.startswith("_"):
        return "it is not a transformers ModelOutput, and onnxkit does not import modules a file names"
    if importlib.util.find_spec("transformers") is None:
        raise EnvironmentProblem(
            f"the program returns {name}, a transformers type: install transformers to load it",
            hint="pip install transformers",
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        return f"the installed transformers has no module {module_name}"
    except Exception as exc:
        raise EnvironmentProblem(f"importing {module_name} (for the type {name}) failed: {type(exc).__name__}: {exc}") from exc
    from transformers.utils import ModelOutput

    # vars(), not getattr: a module-level __getattr__ must not be consulted for a name
    # chosen by the file.
    cls = vars(module).get(cls_name)
    if cls is None:
        raise EnvironmentProblem(
            f"the installed transformers has no {name}; the program was saved with another transformers version",
        )
    if not (isinstance(cls, type) and issubclass(cls, ModelOutput) and cls is not ModelOutput and cls.__module__ == module_name):
        return "it is not a transformers ModelOutput defined in transformers"
    if pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE.get(name) is not cls:
        return f"transformers did not register {name} with torch's pytree"
    return None


# ---------------------------------------------------------------- loading

@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Inside, every torch.load is weights_only=True, so a file cannot fall back to full
    unpickling (torch.export.load retries with weights_only=False on failure)."""
    torch = _torch()
    original = torch.load

    def guarded(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = guarded
    try:
        yield
    finally:
        torch.load = original


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _load_diagnostics(causes: list[str]) -> Iterator[None]:
    """Collect what torch.export.load logs or warns while failing: it logs the real error
    and raises "Please check the warnings above", which onnxkit's console never shows.
    ``causes`` is filled, on exit, with the innermost error of each record."""
    logger = logging.getLogger("torch.export")
    recorder = _Recorder()
    # torch attaches its own stderr handler to this logger: set it aside, or the
    # traceback is printed above onnxkit's one-line error.
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.handlers = [recorder]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]
        for record in recorder.records:
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                causes.append(_innermost(exc))
            else:
                causes.append(record.getMessage())
        causes.extend(str(w.message) for w in caught if issubclass(w.category, UserWarning) and "deserializ" in str(w.message).lower())


def _innermost(exc: BaseException) -> str:
    from onnxkit.frameworks.torch_fw import _first_line

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    last = chain[-1]
    return f"{type(last).__name__}: {_first_line(last)}"


def _read_program(path: Path, trust: bool):
    from onnxkit.frameworks.torch_fw import _first_line, _quiet

    torch = _torch()
    guard = contextlib.nullcontext() if trust else _weights_only_loads()
    causes: list[str] = []
    try:
        with guard, _quiet(), _load_diagnostics(causes):
            return torch.export.load(str(path))
    except pickle.UnpicklingError as exc:
        raise UnsafeInput(
            f"{path.name} holds pickled objects besides tensors; unpickling runs code ({_first_line(exc)})",
            hint="pass --trust if you vouch for this file",
        ) from exc
    except Exception as exc:
        cause = causes[0] if causes else f"{type(exc).__name__}: {_first_line(exc)}"
        raise InputError(f"cannot load {path.name} as a torch.export program: {cause}") from exc


def _load_pt2(path: Path, options: LoadOptions):
    from onnxkit.frameworks.torch_fw import TorchSource, _first_line

    if not options.trust:
        reasons = audit_pt2(path)
        if reasons:
            raise UnsafeInput(
                f"{path.name} would run code when loaded: {reasons[0]}"
                + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""),
                hint="re-export it with torch.export.save from plain tensors, or pass --trust if you vouch for this file",
            )
    register_output_types(path, trust=options.trust)
    ep = _read_program(path, options.trust)
    specs = _specs_from_program(ep)
    if options.inputs:
        from onnxkit.foundation.spec import merge_specs

        _check_user_specs(specs, list(options.inputs), path.name)
        specs = merge_specs(specs, list(options.inputs))
    try:
        module = ep.module()
    except Exception as exc:
        raise InputError(f"cannot rebuild a module from {path.name}: {_first_line(exc)}") from exc
    return TorchSource(module, path, specs, options, kind="torch.export program", program=ep)


def _check_user_specs(program_specs: list[InputSpec], user_specs: list[InputSpec], file_name: str) -> None:
    """A .pt2 records its inputs' dtypes and shapes; an --input that contradicts them
    describes a model the program is not (PyTorch would only say "Guard failed")."""
    recorded = {s.name: s for s in program_specs}
    for spec in user_specs:
        have = recorded.get(spec.name)
        if have is None:
            continue  # merge_specs names unknown inputs
        if np.dtype(spec.dtype) != np.dtype(have.dtype):
            raise UsageError(
                f"--input {spec.name} says {np.dtype(spec.dtype).name} but {file_name} was exported with "
                f"{spec.name} as {np.dtype(have.dtype).name}",
                hint=f"use {spec.name}:[...]:{np.dtype(have.dtype).name}, or leave the dtype to the program",
            )
        if len(spec.shape) != len(have.shape):
            why = f"{len(spec.shape)} dims instead of {len(have.shape)}"
        elif any(isinstance(r, int) and u != r for u, r in zip(spec.shape, have.shape)):
            why = "a size the program fixed cannot be made dynamic or changed"
        else:
            continue
        raise UsageError(
            f"--input {spec} does not fit {file_name}, which was exported with {have}: {why}",
            hint="leave --input out: a .pt2 carries its own input specs",
        )


def _specs_from_program(ep) -> list[InputSpec]:
    """Input names, shapes and dtypes from the program's placeholders; symbolic sizes
    become named dynamic dims ("batch" for a symbol used only as the leading dim)."""
    torch = _torch()
    user_inputs = list(ep.graph_signature.user_inputs)
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    raw: list[tuple[str, list[Any], Any]] = []
    for name in user_inputs:
        node = nodes.get(name)
        val = node.meta.get("val") if node is not None else None
        if not isinstance(val, torch.Tensor):
            raise UsageError(f"the program's input {name!r} is not a tensor; onnxkit exports tensor inputs only")
        dims: list[Any] = []
        for d in val.shape:
            dims.append(int(d) if isinstance(d, int) else str(d.node.expr))
        raw.append((name, dims, val.dtype))
    axes: dict[str, set[int]] = {}
    for _, dims, _ in raw:
        for i, d in enumerate(dims):
            if isinstance(d, str):
                axes.setdefault(d, set()).add(i)
    rename: dict[str, str] = {}
    leading = [sym for sym, where in axes.items() if where == {0}]
    for k, sym in enumerate(leading):
        rename[sym] = "batch" if k == 0 else f"batch_{k}"
    specs = []
    for name, dims, dtype in raw:
        shape = tuple(rename.get(d, _dim_name(d)) if isinstance(d, str) else d for d in dims)
        specs.append(InputSpec(name, shape, np.dtype(_np_dtype(dtype))))
    return specs


def _dim_name(expr: str) -> str:
    """A symbolic size expression as a dim_param-friendly name (s53 stays s53)."""
    return re.sub(r"\W+", "_", expr).strip("_") or "dyn"


def _np_dtype(dtype) -> Any:
    torch = _torch()
    return torch.empty((), dtype=dtype).numpy().dtype
