"""Input specs: ``NAME:[d0,d1,...]:DTYPE`` on the command line, and the same from a model."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from onnxkit.errors import UsageError

Dim = int | str | None  # int: fixed; str: symbolic (dynamic, named); None: dynamic, unnamed

SPEC_FORM = "NAME:[d0,d1,...]:DTYPE, e.g. input_ids:[batch,128]:int64 or x:[1,3,224,224]:float32"
_SPEC_RE = re.compile(r"^(?P<name>[^:\[\]]+):\[(?P<dims>[^\]]*)\](?::(?P<dtype>[A-Za-z0-9_]+))?$")
_DIM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ONNX tensor element type <-> numpy, without importing onnx at module import time
_ONNX_TO_NP = {
    1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
    8: np.str_, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64,
}


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    # Exclusive upper bound for integer inputs that index a table (token ids into an
    # embedding), learned from the graph so random inputs stay in range.
    high: int | None = None

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: (d if isinstance(d, str) else f"{self.name}_dim{i}") for i, d in enumerate(self.shape) if not isinstance(d, int)}

    def __str__(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}:[{dims}]:{np.dtype(self.dtype).name}"

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": [d for d in self.shape], "dtype": np.dtype(self.dtype).name}
        if self.high is not None:
            d["high"] = self.high
        return d


def parse_dtype(text: str) -> np.dtype:
    if text in ("str", "string", "object"):
        return np.dtype(np.str_)
    if text == "float":
        # numpy reads "float" as float64; in a model's input spec everyone means float32.
        return np.dtype(np.float32)
    try:
        dt = np.dtype(text)
    except TypeError:
        raise UsageError(f"unknown dtype {text!r}; use a numpy name such as float32, int64, bool") from None
    if dt.kind not in "biufU":
        raise UsageError(f"unsupported dtype {text!r}; use a numpy name such as float32, int64, bool")
    return dt


def parse_spec(text: str) -> InputSpec:
    """Parse one ``--input`` value."""
    m = _SPEC_RE.match(text.strip())
    if not m:
        raise UsageError(f"malformed input spec {text!r}; expected {SPEC_FORM}")
    dims: list[Dim] = []
    raw = m.group("dims").strip()
    for part in [x.strip() for x in raw.split(",")] if raw else []:
        if re.fullmatch(r"\d+", part):
            dims.append(int(part))
        elif part == "?":
            dims.append(None)
        elif re.fullmatch(r"-\d+", part):
            # -1 means "dynamic" to some tools and "infer" to reshape; a spec says which it is.
            raise UsageError(f"negative dimension {part} in input spec {text!r}; write a dynamic dimension as ? "
                             f"or a name (e.g. batch), a fixed one as a positive number")
        elif _DIM_RE.match(part):
            dims.append(part)
        else:
            raise UsageError(f"malformed dimension {part!r} in input spec {text!r}; expected {SPEC_FORM}")
    dtype = parse_dtype(m.group("dtype") or "float32")
    return InputSpec(m.group("name").strip(), tuple(dims), dtype)


def parse_specs(texts: list[str] | None) -> list[InputSpec]:
    specs = [parse_spec(t) for t in texts or []]
    names = [s.name for s in specs]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UsageError(f"input spec given twice for: {', '.join(sorted(dupes))}")
    return specs


def np_dtype_of_onnx(elem_type: int) -> np.dtype:
    if elem_type not in _ONNX_TO_NP:
        raise UsageError(f"ONNX element type {elem_type} has no numpy counterpart onnxkit can feed")
    return np.dtype(_ONNX_TO_NP[elem_type])


def _dims_of(type_proto) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


# Ops an index passes through unchanged on its way to the table it indexes.
_INDEX_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"}


def index_bounds(model) -> dict[str, int]:
    """Integer graph inputs that index a constant table (Gather on an initializer, as in
    token embeddings), with the table's size along the gathered axis."""
    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    tables = {t.name: list(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    tables[node.output[0]] = list(attr.t.dims)
    bounds: dict[str, int] = {}
    for vi in graph.input:
        if vi.name in tables or not vi.type.HasField("tensor_type"):
            continue
        if vi.type.tensor_type.elem_type not in (2, 3, 4, 5, 6, 7, 12, 13):  # integer types
            continue
        frontier, seen, found = [vi.name], set(), []
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, pos in consumers.get(name, []):
                if node.op_type == "Gather" and pos == 1 and node.input[0] in tables:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = tables[node.input[0]]
                    if dims and -len(dims) <= axis < len(dims):
                        found.append(int(dims[axis]))
                elif node.op_type in _INDEX_PASSTHROUGH and pos == 0:
                    frontier.extend(node.output)
        if found:
            bounds[vi.name] = min(found)
    return bounds


def with_bounds(specs: list[InputSpec], bounds: dict[str, int]) -> list[InputSpec]:
    from dataclasses import replace

    return [replace(s, high=bounds[s.name]) if s.name in bounds and s.dtype.kind in "iu" else s for s in specs]


def specs_from_onnx(model) -> list[InputSpec]:
    """The real (non-initializer) inputs of an ONNX model as specs."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        specs.append(InputSpec(vi.name, _dims_of(vi.type), np_dtype_of_onnx(vi.type.tensor_type.elem_type)))
    return with_bounds(specs, index_bounds(model))


def outputs_from_onnx(model) -> list[InputSpec]:
    out = []
    for vi in model.graph.output:
        if vi.type.HasField("tensor_type"):
            out.append(InputSpec(vi.name, _dims_of(vi.type), np_dtype_of_onnx(vi.type.tensor_type.elem_type)))
        else:  # sequences/maps (ZipMap): no tensor spec
            out.append(InputSpec(vi.name, (), np.dtype(object)))
    return out


def merge_specs(model_specs: list[InputSpec], user_specs: list[InputSpec]) -> list[InputSpec]:
    """Override the model's specs with the user's, by name; unknown names are an error."""
    if not user_specs:
        return model_specs
    by_name = {s.name: s for s in user_specs}
    known = {s.name for s in model_specs}
    unknown = [n for n in by_name if n not in known]
    if unknown and model_specs:
        raise UsageError(
            f"--input names {', '.join(unknown)} not among the model inputs: {', '.join(sorted(known))}",
        )
    return [by_name.get(s.name, s) for s in model_specs] if model_specs else user_specs
