"""One walk over every place an ONNX model can hold a tensor.

The external-data rule, the shape checks and the external-data loader must all see the
same tensors: a field one of them skips is a way around the others (a sparse initializer
whose data file is a hard link to ``/etc/shadow`` ran and came back in ``run``'s output
while the dense initializers were checked). Every tensor-bearing field of the protobuf is
visited here:

* ``GraphProto.initializer`` and ``GraphProto.sparse_initializer`` (values and indices);
* node attributes ``t``, ``tensors``, ``sparse_tensor``, ``sparse_tensors``, and the
  subgraphs in ``g`` and ``graphs``, to any depth;
* model-local functions: their nodes (and those nodes' subgraphs) and the default values
  of their attributes (``attribute_proto``, subgraphs included);
* the graphs of ``training_info`` (initialization and algorithm).

The walk uses an explicit stack: a hostile file must not turn it into a RecursionError.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# A ModelProto's sub-messages, typed loosely so this module imports onnx lazily.
Proto = Any


def _node_lists(model: Proto) -> Iterator[tuple[str, Proto, Proto | None]]:
    """(where, nodes, graph or None for a function body) for every node list in the model."""
    stack: list[tuple[str, Proto]] = [("graph", model.graph)]
    for ti, info in enumerate(model.training_info):
        stack.append((f"training_info[{ti}].initialization", info.initialization))
        stack.append((f"training_info[{ti}].algorithm", info.algorithm))
    functions = [(f"function {f.domain + '.' if f.domain else ''}{f.name}", f) for f in model.functions]
    for where, fn in functions:
        yield where, fn.node, None
        stack.extend(_subgraphs(where, fn.node))
        stack.extend(_attr_subgraphs(f"{where} default", fn.attribute_proto))
    while stack:
        where, graph = stack.pop()
        yield where, graph.node, graph
        stack.extend(_subgraphs(where, graph.node))


def _subgraphs(where: str, nodes) -> list[tuple[str, Proto]]:
    found = []
    for node in nodes:
        found.extend(_attr_subgraphs(f"{where}/{node.name or node.op_type}", node.attribute))
    return found


def _attr_subgraphs(where: str, attributes) -> list[tuple[str, Proto]]:
    found = []
    for attr in attributes:
        if attr.HasField("g"):
            found.append((f"{where}.{attr.name}", attr.g))
        for i, g in enumerate(attr.graphs):
            found.append((f"{where}.{attr.name}[{i}]", g))
    return found


def iter_graphs(model: Proto) -> Iterator[Proto]:
    """The main graph, every subgraph (in functions too) and the training_info graphs."""
    for _, _, graph in _node_lists(model):
        if graph is not None:
            yield graph


def iter_nodes(model: Proto) -> Iterator[Proto]:
    """Every node: graphs, subgraphs and function bodies."""
    for _, nodes, _ in _node_lists(model):
        yield from nodes


def _attr_tensors(attr, label: str) -> Iterator[tuple[str, Proto]]:
    if attr.HasField("t"):
        yield label, attr.t
    for i, t in enumerate(attr.tensors):
        yield f"{label}[{i}]", t
    if attr.HasField("sparse_tensor"):
        yield from _sparse_parts(attr.sparse_tensor, label)
    for i, sp in enumerate(attr.sparse_tensors):
        yield from _sparse_parts(sp, f"{label}[{i}]")


def _sparse_parts(sparse, label: str) -> Iterator[tuple[str, Proto]]:
    yield f"{label} (sparse values)", sparse.values
    yield f"{label} (sparse indices)", sparse.indices


def iter_tensors(model: Proto) -> Iterator[tuple[str, Proto]]:
    """(where, TensorProto) for every tensor in the model, sparse parts included."""
    for where, nodes, graph in _node_lists(model):
        prefix = "" if where == "graph" else f"{where}: "
        if graph is not None:
            for t in graph.initializer:
                yield f"{prefix}tensor {t.name!r}", t
            for sp in graph.sparse_initializer:
                yield from _sparse_parts(sp, f"{prefix}sparse initializer {sp.values.name!r}")
        for node in nodes:
            for attr in node.attribute:
                yield from _attr_tensors(attr, f"{prefix}attribute {attr.name!r} of node {node.name or node.op_type!r}")
    for fn in model.functions:
        for attr in fn.attribute_proto:
            yield from _attr_tensors(attr, f"default of attribute {attr.name!r} of function {fn.name!r}")


def iter_sparse(model: Proto) -> Iterator[tuple[str, Proto]]:
    """(where, SparseTensorProto): their dense shape is what ONNX Runtime allocates."""
    for where, nodes, graph in _node_lists(model):
        prefix = "" if where == "graph" else f"{where}: "
        if graph is not None:
            for sp in graph.sparse_initializer:
                yield f"{prefix}sparse initializer {sp.values.name!r}", sp
        for node in nodes:
            for attr in node.attribute:
                label = f"{prefix}attribute {attr.name!r} of node {node.name or node.op_type!r}"
                if attr.HasField("sparse_tensor"):
                    yield label, attr.sparse_tensor
                for sp in attr.sparse_tensors:
                    yield label, sp
    for fn in model.functions:
        for attr in fn.attribute_proto:
            if attr.HasField("sparse_tensor"):
                yield f"default of attribute {attr.name!r} of function {fn.name!r}", attr.sparse_tensor
            for sp in attr.sparse_tensors:
                yield f"default of attribute {attr.name!r} of function {fn.name!r}", sp
