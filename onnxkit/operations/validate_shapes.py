"""Declared output shapes against what a model produces.

A graph output annotated [N, 5] on a model that returns [N, 3] runs and compares fine: the
comparison reads the arrays. But a consumer that trusts the file's annotation (a serving
stack sizing its buffers, a converter, code reading ``graph.output``) will be wrong, so the
result says so; a correct model is not failed for its annotation."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from onnxkit.foundation.data import Feeds

DECLARED_SHAPE_MISMATCH = "declared_shape_mismatch"


def declared_shapes(graph_model: Any) -> dict[str, list[int | str | None]]:
    """Each tensor output's declared dims (an int, a symbolic name, or None when unset);
    outputs with no shape annotation are left out: nothing is declared there."""
    out: dict[str, list[int | str | None]] = {}
    for o in graph_model.graph.output:
        t = o.type.tensor_type if o.type.HasField("tensor_type") else None
        if t is None or not t.HasField("shape"):
            continue
        out[o.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return out


class ShapeWatch:
    """Wraps a predict function and keeps the shapes each output had, batch by batch."""

    def __init__(self, run: Callable[[Feeds], Feeds], graph_model: Any, file_name: str = "") -> None:
        self.run = run
        self.file_name = file_name
        self.declared = declared_shapes(graph_model)
        self.seen: dict[str, list[tuple[int, ...]]] = {}

    def __call__(self, feeds: Feeds) -> Feeds:
        out = self.run(feeds)
        for name, value in out.items():
            shape = tuple(int(d) for d in np.shape(value))
            seen = self.seen.setdefault(name, [])
            if shape not in seen and len(seen) < 16:
                seen.append(shape)
        return out

    def mismatches(self) -> list[tuple[str, str]]:
        """(output, message) for each output whose produced shape contradicts its annotation."""
        found = []
        for name, dims in self.declared.items():
            for shape in self.seen.get(name, []):
                if _contradicts(dims, shape):
                    found.append((name, f"output {name!r}: {self.file_name or 'the file'} declares shape {_fmt(dims)} but the model "
                                       f"produces {list(shape)}; compared as produced (the annotation is wrong: "
                                       "code that sizes buffers or reshapes from it will break)"))
                    break
        return found


def _contradicts(dims: list[int | str | None], shape: tuple[int, ...]) -> bool:
    if len(dims) != len(shape):
        return True
    # 0 is what an unset dim_value reads as in some writers; only a positive size is a claim.
    return any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, shape))


def _fmt(dims: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None or d == 0 else str(d) for d in dims) + "]"


def add_shape_warnings(result: Any, *watches: ShapeWatch | None) -> None:
    for watch in watches:
        for name, message in watch.mismatches() if watch is not None else ():
            result.notes.append(message)
            result.warnings.append({"code": DECLARED_SHAPE_MISMATCH, "output": name})


def declared_shape_notes(result: Any) -> list[str]:
    """The notes add_shape_warnings put in a validation result, for a command (optimize) that
    reports a validation inside its own result."""
    names = {w["output"] for w in result.warnings if w.get("code") == DECLARED_SHAPE_MISMATCH}
    return [n for n in result.notes if "declares shape" in n and any(n.startswith(f"output {x!r}: ") for x in names)]


def watch_file(run: Callable[[Feeds], Feeds], path: Any) -> ShapeWatch | None:
    """A ShapeWatch on an ONNX file given by path (its graph read without the weights); None
    for anything else (a model in memory)."""
    import os

    if not isinstance(path, (str, os.PathLike)):
        return None
    import onnx

    graph = onnx.load(os.fspath(path), load_external_data=False)
    return ShapeWatch(run, graph, os.path.basename(os.fspath(path)))
