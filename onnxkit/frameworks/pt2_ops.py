"""Which node targets an untrusted torch.export program may call.

"Registered with the dispatcher" is no safety property: aten.from_file maps any file
writable, aten.save writes one, aten.manual_seed and aten.set_grad_enabled change global
state, higher-order ops such as with_effects call an operator handed to them. An operator is
accepted only when every rule below holds; anything not shown to be plain tensor compute
is refused.
"""

from __future__ import annotations

import re

from onnxkit._lazy import require

# Namespaces of plain compute. Custom namespaces (profiler, _C, torchvision, user
# libraries) are refused: their kernels are arbitrary code.
_OP_NAMESPACES = {"aten", "prims", "quantized_decomposed"}
# Higher-order ops that only run the program's own subgraphs (control flow, grad and
# autocast regions). with_effects, call_torchbind, auto_functionalized... call
# operators or objects named by the file and are refused.
_HIGHER_ORDER = {"cond", "while_loop", "map_impl", "scan", "associative_scan", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
# A second wall under the schema rules: names of file, storage, RNG-state, global-state
# and printing operators, in case a future torch adds one whose schema looks harmless.
_DENIED_NAME = re.compile(
    r"file|save|load|storage(?!_offset)|print|pickle|seed|rng_state|mmap|blob|ipc|^set_|_set_|"
    r"cufft|record_|profil|grad_enabled|rpc|distributed|stream|thread",
)
# Argument types a compute kernel takes, as torch prints them. No Storage, Stream,
# Generator, Any, dict, custom class or string list: those reach memory or objects
# outside the program's tensors.
_PLAIN_TYPES = {
    "Tensor", "Optional[Tensor]", "List[Tensor]", "List[Optional[Tensor]]", "Optional[List[Optional[Tensor]]]",
    "int", "Optional[int]", "List[int]", "Optional[List[int]]",
    "float", "Optional[float]", "List[float]", "Optional[List[float]]",
    "bool", "Optional[bool]", "List[bool]", "number", "Optional[number]", "List[number]", "complex",
    "Device", "Optional[Device]", "QScheme",
}
_STR_TYPES = {"str", "Optional[str]"}
# A string argument is accepted only as one of these option selectors (a rounding mode,
# an einsum equation, an assertion message...): a string named filename, path or
# anything else is not.
_OPTION_STRINGS = {
    "UPLO", "activation", "algorithm", "approximate", "driver", "equation", "indexing", "interpolation",
    "mode", "norm", "ord", "p", "pad_mode", "padding", "padding_side", "reduce", "rounding_mode", "side",
    "assert_msg", "msg",
}
# Operators that return nothing and write no tensor exist for their side effect; these
# are checks that only raise.
_CHECKS = {
    "_assert_async", "_assert_scalar", "_assert_tensor_metadata", "sym_constrain_range",
    "sym_constrain_range_for_size", "_functional_assert_async", "_functional_assert_scalar",
    "_functional_sym_constrain_range", "_functional_sym_constrain_range_for_size",
}
# Non-operator targets torch.export writes for arithmetic on symbolic sizes (its
# deserializer's own list); any other callable (operator.call, attrgetter, methodcaller)
# would let a file chain calls to anything.
_SYM_FUNCTIONS = {
    "_operator": {
        "eq", "ne", "le", "ge", "lt", "gt", "neg", "pos", "mul", "add", "sub", "floordiv", "mod", "pow",
        "truediv", "and_", "or_", "lshift", "rshift", "getitem",
    },
    "math": {"trunc", "ceil", "floor", "sqrt"},
    "torch": {"sym_not", "sym_int", "sym_float", "sym_ite", "sym_max", "sym_min", "sym_sqrt", "sym_sum", "_check", "_check_is_size"},
}


def target_refusal(target: str) -> str | None:
    """Why the node target ``target`` must not be resolved and run; None if it may."""
    parts = target.split(".")
    if target.startswith("#") or not all(p.isidentifier() for p in parts):
        return "is not a registered operator"
    if parts[:2] == ["torch", "ops"]:
        return _operator_refusal(parts)
    if len(parts) == 2 and parts[1] in _SYM_FUNCTIONS.get(parts[0], ()):
        return None
    return "is not a registered operator or size arithmetic"


def _operator_refusal(parts: list[str]) -> str | None:
    # aten.__and__ is a real operator: the op name may be a dunder, its lookup proves it
    if len(parts) not in (4, 5) or parts[2].startswith("__") or parts[4:5] and parts[4].startswith("__"):
        return "is not a registered operator"
    ns_name, op_name = parts[2], parts[3]
    if ns_name == "higher_order":
        if len(parts) != 4 or op_name not in _HIGHER_ORDER:
            return "is a higher-order operator that can call what the file names"
        return None
    if ns_name not in _OP_NAMESPACES:
        return f"is not a registered operator of aten/prims (namespace {ns_name!r} is not plain tensor compute)"
    if _DENIED_NAME.search(op_name):
        return "touches files, storage or global state"
    if len(parts) == 5:
        op = _lookup(ns_name, op_name, parts[4])
        return "is not a registered operator" if op is None else _schema_refusal(op._schema)
    # A bare packet picks its overload from the arguments at run time: every one must pass.
    overloads = _overload_names(ns_name, op_name)
    if not overloads:
        return "is not a registered operator"
    for overload in overloads:
        op = _lookup(ns_name, op_name, overload)
        why = "is not a registered operator" if op is None else _schema_refusal(op._schema)
        if why:
            return f"{why} (overload {overload})"
    return None


def _overload_names(ns_name: str, op_name: str) -> list[str]:
    torch = require("torch")
    try:
        packet = getattr(getattr(torch.ops, ns_name), op_name)
    except (AttributeError, RuntimeError):
        return []
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        return []
    return list(packet.overloads())


def _lookup(ns_name: str, op_name: str, overload: str):
    """The OpOverload ``ns.op.overload`` from the live registry, or None. getattr on
    torch.ops consults the dispatcher; nothing found is called."""
    torch = require("torch")
    try:
        packet = getattr(getattr(torch.ops, ns_name), op_name)
        if not isinstance(packet, torch._ops.OpOverloadPacket) or overload.startswith("__"):
            return None
        op = getattr(packet, overload)
    except (AttributeError, RuntimeError):
        return None
    return op if isinstance(op, torch._ops.OpOverload) else None


def _schema_refusal(schema) -> str | None:
    """Accept a schema whose only effects are on its own tensor arguments and results."""
    writes = False
    for arg in schema.arguments:
        kind = str(arg.type)
        if kind in _STR_TYPES:
            if arg.name not in _OPTION_STRINGS:
                return f"takes a string {arg.name!r}"
        elif kind == "Optional[Generator]":
            continue  # checked per node: the program may only pass None
        elif kind not in _PLAIN_TYPES:
            return f"takes a {kind} ({arg.name})"
        if arg.alias_info is not None and arg.alias_info.is_write:
            writes = True
    for ret in schema.returns:
        if str(ret.type) not in _PLAIN_TYPES:
            return f"returns a {ret.type}"
    if not schema.returns and not writes and schema.name.split("::")[-1] not in _CHECKS:
        return "returns nothing and writes no tensor: it exists for a side effect"
    return None


def generator_arguments(target: str) -> set[str]:
    """Names of the Generator arguments of the operator ``target`` (already accepted by
    target_refusal): a program may only leave them None."""
    parts = target.split(".")
    if parts[:2] != ["torch", "ops"] or len(parts) not in (4, 5) or parts[2] == "higher_order":
        return set()
    overloads = parts[4:5] or _overload_names(parts[2], parts[3])
    names: set[str] = set()
    for overload in overloads:
        op = _lookup(parts[2], parts[3], overload)
        if op is not None:
            names |= {a.name for a in op._schema.arguments if "Generator" in str(a.type)}
    return names
