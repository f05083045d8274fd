"""Constants of the source model that an exporter left as graph inputs become initializers.

tf2onnx freezes a tf.function's variables, but a tensor the function merely captured (Keras 3's
Normalization layer keeps its adapted mean and variance as plain tensors, so does
EfficientNet's built-in normalization) arrives as an extra required graph input. A user
feeding only the model's own inputs then gets "Required inputs are missing", and validation,
which feeds every graph input, compares a model that no longer holds the source's values.
The values are known at export time: they are the function's captures.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from onnxkit.errors import ConversionError

log = logging.getLogger(__name__)


def captured_constants(function: Any) -> dict[str, np.ndarray]:
    """The tensors a ``tf.function`` captured by value, by the name of the placeholder that
    stands for each inside its graph (the name tf2onnx gives the graph input).

    Resource handles (variables) are left out: tf2onnx freezes those itself.
    """
    concrete = function.get_concrete_function()  # already traced by the export: a cache hit
    values: dict[str, np.ndarray] = {}
    for external, internal in concrete.graph.captures:
        if getattr(external, "dtype", None) is None or external.dtype.name in ("resource", "variant"):
            continue
        if not hasattr(external, "numpy"):
            continue
        values[internal.name] = np.asarray(external.numpy())
    return values


def fold_constant_inputs(model: Any, values: dict[str, np.ndarray], keep: list[str]) -> list[str]:
    """Turn every graph input not named in ``keep`` into an initializer holding ``values[name]``.

    Returns the names taken out of the inputs. An extra input with no known value is a ConversionError: a
    model that needs inputs its source does not have is not an export of that source.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    initialized = {t.name for t in graph.initializer}
    extra = [vi for vi in graph.input if vi.name not in keep and vi.name not in initialized]
    # tf2onnx's own folding can leave a capture's input consumed by nothing (a mean of 0 and
    # variance of 1 fold away): such an input is dropped, not kept as a dead initializer.
    used = _consumed_names(graph)
    dead = {vi.name for vi in extra if vi.name not in used}
    extra = [vi for vi in extra if vi.name not in dead]
    unknown = [vi.name for vi in extra if vi.name not in values]
    if unknown:
        raise ConversionError(
            f"the exported graph needs input(s) the source model does not have: {', '.join(unknown)} "
            f"(the source's inputs are {', '.join(keep) or 'none'}); the exporter left a constant of the "
            f"model as an input and its value is unknown",
        )
    folded = []
    for vi in extra:
        value = values[vi.name]
        want = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        dims = vi.type.tensor_type.shape.dim
        fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if np.dtype(value.dtype) != np.dtype(want) or len(fixed) != value.ndim or any(
            f is not None and f != s for f, s in zip(fixed, value.shape)
        ):
            raise ConversionError(
                f"the exported graph's input {vi.name} ({np.dtype(want).name}{fixed}) does not match the constant "
                f"the source holds for it ({value.dtype}{list(value.shape)})",
            )
        graph.initializer.append(numpy_helper.from_array(value, vi.name))
        folded.append(vi.name)
    keep_vi = [vi for vi in graph.input if vi.name not in folded and vi.name not in dead]
    del graph.input[:]
    graph.input.extend(keep_vi)
    if folded or dead:
        log.debug("constant inputs folded: %s; unused ones dropped: %s", ", ".join(folded) or "none",
                  ", ".join(sorted(dead)) or "none")
    return folded + sorted(dead)


def _consumed_names(graph: Any) -> set[str]:
    """Names read by any node of ``graph`` or of its subgraphs (If/Loop/Scan bodies), or
    returned as a graph output."""
    names = {o.name for o in graph.output}
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            names.update(node.input)
            for attr in node.attribute:
                if attr.HasField("g"):
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return names


def fold_captured_inputs(model: Any, function: Any, input_names: list[str]) -> list[str]:
    """After tf2onnx converted ``function``: the graph's inputs become exactly ``input_names``."""
    graph_inputs = {vi.name for vi in model.graph.input} - {t.name for t in model.graph.initializer}
    if graph_inputs <= set(input_names):
        return []
    return fold_constant_inputs(model, captured_constants(function), input_names)
