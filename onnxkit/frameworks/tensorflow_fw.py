"""TensorFlow / Keras sources: SavedModel folders, Keras 3 ``.keras`` files, legacy ``.h5``.

Safety comes before loading: a Keras ``Lambda`` layer is marshalled Python bytecode that
runs when the model is rebuilt, and a SavedModel graph can read, write or glob files or
call back into Python. Both are found by reading the files as data (the ``.keras`` zip's
``config.json``, the ``.h5`` ``model_config`` attribute, the ``saved_model.pb`` protobuf)
and refused without ``--trust``.

Export goes through ``tf2onnx.convert.from_function`` on a ``tf.function`` whose input
signature carries the model's own input names with dynamic (None) dims, and returns a
dict keyed by the model's output names, so the ONNX graph keeps those names.
``tf2onnx.convert.from_keras`` is not used: it breaks on Keras 3 models.

TensorFlow is imported only inside functions: importing it takes seconds.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.spec import Dim, InputSpec, merge_specs, with_bounds
from onnxkit.errors import ConversionError, InputError, OnnxkitError, UnsafeInput, UsageError
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.frameworks.tf_audit import (
    _LAMBDA_ALTERNATIVE,
    _LAMBDA_HAZARD,
    _OP_PATTERNS,
    _debug,
    _first_line,
    _lambda_layers,
    _quiet_tensorflow,
    _tf,
    check_keras_safe,
    check_saved_model_safe,
    keras_config,
)
from onnxkit.passes.fold_constant_inputs import fold_captured_inputs

log = logging.getLogger(__name__)

# tf2onnx 1.17 knows opsets up to 18; 17 is well covered by its handlers and by every
# ONNX Runtime still in use.
DEFAULT_OPSET = 17

def _tf2onnx():
    _quiet_tensorflow()
    t2o = require("tf2onnx")
    # tf2onnx resets its own logger's level when imported; set it again afterwards. Its
    # ERROR lines ("op X is not supported") repeat what the ConversionError says.
    logging.getLogger("tf2onnx").setLevel(logging.DEBUG if _debug() else logging.CRITICAL)
    return t2o


def _spec_dims(shape: Iterable[int | None]) -> tuple[Dim, ...]:
    # Dim 0 of a TF/Keras model is the batch by convention; other unknown dims get a
    # positional name so several inputs sharing, e.g., a sequence length stay distinct.
    dims: list[Dim] = []
    for i, d in enumerate(shape):
        if d is None or (isinstance(d, int) and d < 0):
            dims.append("batch" if i == 0 else f"dim{i}")
        else:
            dims.append(int(d))
    return tuple(dims)


def _tf_shape(spec: InputSpec) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in spec.shape]


def _unique(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        candidate, i = n, 1
        while candidate in out:
            candidate, i = f"{n}_{i}", i + 1
        out.append(candidate)
    return out


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(value.numpy() if hasattr(value, "numpy") else value)


# --------------------------------------------------------------------------- export helpers

def _convert(function, input_signature: list, opset: int, framework: str) -> Any:
    """Run tf2onnx on a tf.function; map every failure to one ConversionError paragraph."""
    t2o = _tf2onnx()
    highest = _max_opset()
    if opset > highest:
        raise ConversionError(
            f"{framework}: tf2onnx {t2o.__version__} converts to ONNX opsets up to {highest}, not {opset}; "
            f"use --opset {highest} or lower",
        )
    try:
        model, _ = t2o.convert.from_function(function, input_signature=input_signature, opset=opset)
    except OnnxkitError:
        raise
    except Exception as exc:  # tf2onnx raises whatever the op handler or TF raised
        log.debug("tf2onnx failed", exc_info=True)
        raise _conversion_error(exc, framework, opset) from exc
    _check_converted_ops(model, framework, opset)
    return model


def _conversion_error(exc: BaseException, framework: str, opset: int | None, op: str | None = None) -> ConversionError:
    text = f"{type(exc).__name__}: {exc}"
    if op is None:
        for pat in _OP_PATTERNS:
            m = pat.search(text)
            if m:
                op = m.group(1)
                break
    where = f" at TensorFlow op {op}" if op else ""
    msg = (
        f"{framework}: tf2onnx {_tf2onnx_version()} could not convert the model{where} with opset {opset} "
        f"({_first_line(exc)}); try another --opset (tf2onnx supports up to {_max_opset()}), replace the op with "
        f"standard TensorFlow ops, or run with --verbose for tf2onnx's log"
    )
    err = ConversionError(msg)
    err.detail = (f"{op}: " if op else "") + _first_line(exc)[:200]  # type: ignore[attr-defined]
    return err


def _max_opset() -> int:
    try:
        return max(_tf2onnx().constants.OPSET_TO_IR_VERSION)
    except Exception:  # pragma: no cover - the table moved in some tf2onnx release
        return 18


def _tf2onnx_version() -> str:
    try:
        return _tf2onnx().__version__
    except Exception:  # pragma: no cover
        return "?"


def _check_converted_ops(model, framework: str, opset: int) -> None:
    """tf2onnx converts with continue_on_error: an op it cannot handle stays in the graph
    under its TF name. Such a model would only fail later in the runtime; fail here."""
    import onnx

    known_domains = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    versions = {i.domain or "": i.version for i in model.opset_import}
    bad: list[str] = []

    def walk(graph) -> None:
        for node in graph.node:
            domain = node.domain or ""
            if domain not in known_domains:
                bad.append(node.op_type)
            elif domain in ("", "ai.onnx"):
                try:
                    onnx.defs.get_schema(node.op_type, versions.get(domain, opset), "")
                except onnx.defs.SchemaError:
                    bad.append(node.op_type)
            for attr in node.attribute:
                if attr.g and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    if bad:
        ops = sorted(set(bad))
        raise ConversionError(
            f"{framework}: tf2onnx {_tf2onnx_version()} has no ONNX conversion for TensorFlow op "
            f"{', '.join(ops[:5])} at opset {opset}; try another --opset (tf2onnx supports up to {_max_opset()}), or replace "
            f"that op with standard TensorFlow ops before exporting",
        )


def _fix_io(model, input_specs: list[InputSpec], output_names: list[str], output_shapes: dict[str, tuple]) -> None:
    """Make the ONNX graph's I/O names and symbolic dims the model's own.

    tf2onnx names graph I/O after the structured signature already; this checks that
    and replaces its ``unk__N`` dim names with the spec's names (``batch``, ``dimK``).
    """
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in inits]
    by_name = {vi.name: vi for vi in real_inputs}
    missing = [s.name for s in input_specs if s.name not in by_name]
    if missing:
        raise ConversionError(
            f"tensorflow: the exported ONNX lost input name(s) {', '.join(missing)} "
            f"(it has {', '.join(by_name) or 'none'}); this is a tf2onnx naming problem",
        )
    for spec in input_specs:
        dims = by_name[spec.name].type.tensor_type.shape.dim
        for d, want in zip(dims, spec.shape):
            if isinstance(want, str):
                d.Clear()
                d.dim_param = want
    out_by_name = {vi.name: vi for vi in graph.output}
    lost = [n for n in output_names if n not in out_by_name]
    if lost:
        raise ConversionError(
            f"tensorflow: the exported ONNX lost output name(s) {', '.join(lost)} "
            f"(it has {', '.join(out_by_name) or 'none'}); this is a tf2onnx naming problem",
        )
    batch_first = bool(input_specs) and all(s.shape and s.shape[0] == "batch" for s in input_specs)
    for name in output_names:
        dims = out_by_name[name].type.tensor_type.shape.dim
        shape = output_shapes.get(name)
        if shape is None or len(shape) != len(dims):
            continue
        for i, (d, known) in enumerate(zip(dims, shape)):
            if known is not None:
                continue
            d.Clear()
            d.dim_param = "batch" if (i == 0 and batch_first) else f"{name}_dim{i}"


# --------------------------------------------------------------------------- Keras

def _load_keras(path: Path, trust: bool):
    """Keras version quirks live here: the loader entry point, safe_mode, archives
    without the .keras suffix."""
    keras = require("keras")
    _tf()
    suffix = path.suffix.lower()
    try:
        if suffix in (".keras", ".h5", ".hdf5"):
            # safe_mode is passed explicitly: Keras' default has changed before, and a
            # Lambda that slipped past the config scan must still not be deserialized.
            return keras.saving.load_model(path, compile=False, safe_mode=not trust)
        # A .keras archive under another name: Keras refuses any other suffix, so give
        # it one through a link in a private temp folder (nothing is copied).
        import tempfile

        with tempfile.TemporaryDirectory(prefix="onnxkit-keras-") as tmp:
            link = Path(tmp) / (path.stem + ".keras")
            try:
                link.symlink_to(path.resolve())
            except OSError:
                import shutil

                shutil.copyfile(path, link)
            return keras.saving.load_model(link, compile=False, safe_mode=not trust)
    except OnnxkitError:
        raise
    except ValueError as exc:
        text = str(exc)
        if not trust and ("safe_mode" in text or "lambda" in text.lower()):
            raise UnsafeInput(f"{path.name}: {_LAMBDA_HAZARD}", hint=_LAMBDA_ALTERNATIVE) from None
        raise _keras_load_error(path, exc) from None
    except (TypeError, KeyError, AttributeError, OSError, ImportError) as exc:
        raise _keras_load_error(path, exc) from None
    except RecursionError:
        raise InputError(f"Keras could not load {path.name}: its config is nested too deep (a corrupt or hostile file)") from None


def _keras_load_error(path: Path, exc: BaseException) -> InputError:
    text = _first_line(exc)
    if "Unknown layer" in text or "Could not locate" in text or "custom" in text.lower():
        return InputError(
            f"Keras could not rebuild {path.name}: {text}",
            hint="the model uses a custom layer or function; import and register it "
                 "(keras.saving.register_keras_serializable) before exporting, or export from Python",
        )
    return InputError(f"Keras could not load {path.name}: {text}")


def _embedding_bounds(model: Any, specs: list[InputSpec]) -> dict[str, int]:
    """Integer inputs of a model with Embedding layers get random ids below the smallest
    table's size: ids past a table are an error in Keras (and garbage in ONNX Runtime), so
    random validation rows must stay inside them, as real token ids do."""
    sizes = [int(layer.input_dim) for layer in _layers(model) if hasattr(layer, "input_dim")
             and type(layer).__name__ == "Embedding"]
    if not sizes:
        return {}
    return {s.name: min(sizes) for s in specs if s.dtype.kind in "iu" and s.high is None}


def _layers(model: Any) -> list[Any]:
    """Every layer, nested models' included."""
    found, todo = [], list(getattr(model, "layers", []) or [])
    while todo:
        layer = todo.pop()
        found.append(layer)
        todo.extend(getattr(layer, "layers", []) or [])
    return found


class KerasSource(SourceModel):
    framework = "tensorflow"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        check_keras_safe(path, options.trust)
        tf = _tf()
        keras = require("keras")
        self.path = path
        self.framework_version = f"{tf.__version__} (keras {keras.__version__})"
        self.model = _load_keras(path, options.trust)
        self._tf = tf
        inputs = getattr(self.model, "inputs", None)
        if not inputs:
            if not options.inputs:
                raise UsageError(
                    f"{path.name} is a Keras model without defined inputs (a subclassed model never called); "
                    "pass --input NAME:[batch,...]:DTYPE for each input",
                )
            self._input_struct = None
            model_specs = list(options.inputs)
        else:
            self._input_struct = _keras_input_struct(self.model, inputs)
            model_specs = [
                InputSpec(t.name, _spec_dims(t.shape), np.dtype(_np_dtype_name(t.dtype))) for t in inputs
            ]
        self.input_specs = with_bounds(merge_specs(model_specs, options.inputs), _embedding_bounds(self.model, model_specs))
        outputs = getattr(self.model, "outputs", None) or []
        names = list(getattr(self.model, "output_names", None) or [])
        if len(names) != len(outputs) or not names:
            names = [f"output_{i}" for i in range(max(1, len(outputs)))]
        self.output_names = _unique([str(n) for n in names])
        self._output_shapes = {
            n: tuple(None if d is None else int(d) for d in t.shape) for n, t in zip(self.output_names, outputs)
        }

    def _call_args(self, tensors: dict[str, Any]) -> Any:
        keras = require("keras")
        if self._input_struct is None:
            vals = [tensors[s.name] for s in self.input_specs]
            return vals[0] if len(vals) == 1 else vals
        return keras.tree.map_structure(lambda kt: tensors[kt.name], self._input_struct)

    def _named_outputs(self, result: Any) -> dict[str, Any]:
        keras = require("keras")
        flat = keras.tree.flatten(result)
        if len(flat) != len(self.output_names):
            self.output_names = _unique([f"output_{i}" for i in range(len(flat))])
        return dict(zip(self.output_names, flat))

    def predict(self, feeds: Feeds) -> Feeds:
        tf = self._tf
        tensors = {s.name: tf.convert_to_tensor(np.asarray(feeds[s.name], dtype=s.dtype)) for s in self.input_specs}
        try:
            result = self.model(self._call_args(tensors), training=False)
        except Exception as exc:
            raise InputError(f"Keras could not run {self.path.name} on these inputs: {_first_line(exc)}") from exc
        return {k: _to_numpy(v) for k, v in self._named_outputs(result).items()}

    def export(self, options: LoadOptions) -> ExportOutcome:
        tf = self._tf
        opset = options.opset or DEFAULT_OPSET
        specs = merge_specs(self.input_specs, options.inputs)
        signature = [tf.TensorSpec(_tf_shape(s), tf.as_dtype(s.dtype), name=s.name) for s in specs]
        names = [s.name for s in specs]

        def serve(*args):
            return self._named_outputs(self.model(self._call_args(dict(zip(names, args))), training=False))

        fn = tf.function(serve, input_signature=signature, autograph=False)
        model = _convert(fn, signature, opset, "tensorflow (Keras)")
        _fix_io(model, specs, self.output_names, self._output_shapes)
        fold_captured_inputs(model, fn, names)
        notes = []
        if _lambda_layers(keras_config(self.path)):
            notes.append("the model's Lambda layer ran its Python code during export (--trust)")
        return ExportOutcome(model=model, exporter=f"tf2onnx {_tf2onnx().__version__}", opset=opset, notes=notes)


def _keras_input_struct(model: Any, inputs: list) -> Any:
    """The structure (tensor, list or dict of KerasTensors) the model is called with.

    Keras 3 quirk: ``Sequential.input`` raises when the model was rebuilt from a file
    (it was "never called"), though ``inputs`` is defined.
    """
    try:
        return model.input
    except (AttributeError, ValueError):
        return inputs[0] if len(inputs) == 1 else list(inputs)


def _np_dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", dtype)
    return str(name)


# --------------------------------------------------------------------------- SavedModel

class SavedModelSource(SourceModel):
    framework = "tensorflow"

    def __init__(self, path: Path, options: LoadOptions) -> None:
        sm = check_saved_model_safe(path, options.trust)
        available = sorted({k for mg in sm.meta_graphs for k in mg.signature_def if not k.startswith("__")})
        wanted = options.signature or "serving_default"
        if wanted not in available:
            raise UsageError(
                f"{path.name} has no signature {wanted!r}; available: {', '.join(available) or 'none'}",
                hint="choose one with --signature",
            )
        tf = _tf()
        self._tf = tf
        self.path = path
        self.signature = wanted
        self.framework_version = tf.__version__
        try:
            self._loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise InputError(f"TensorFlow could not load the SavedModel {path.name}: {_first_line(exc)}") from None
        try:
            self.fn = self._loaded.signatures[wanted]
        except KeyError:
            raise UsageError(
                f"{path.name} has no signature {wanted!r}; available: {', '.join(self._loaded.signatures) or 'none'}",
            ) from None
        _args, kwargs = self.fn.structured_input_signature
        if _args:
            raise InputError(f"signature {wanted!r} of {path.name} takes positional inputs; onnxkit needs named ones")
        model_specs = []
        for name, spec in sorted(kwargs.items()):
            if not isinstance(spec, tf.TensorSpec):
                raise InputError(f"signature {wanted!r} input {name!r} is not a dense tensor ({type(spec).__name__})")
            shape = spec.shape.as_list() if spec.shape.rank is not None else []
            model_specs.append(InputSpec(name, _spec_dims(shape), np.dtype(spec.dtype.as_numpy_dtype)))
        self.input_specs = merge_specs(model_specs, options.inputs)
        outs = self.fn.structured_outputs
        if not isinstance(outs, dict):
            outs = {f"output_{i}": t for i, t in enumerate(tf.nest.flatten(outs))}
        self._outputs = outs
        # Sorted, as tf.nest flattens a dict: the ONNX graph's outputs come in that order.
        self.output_names = sorted(outs)
        self._output_shapes = {
            n: tuple(t.shape.as_list()) for n, t in outs.items() if getattr(t, "shape", None) is not None and t.shape.rank is not None
        }

    def _run(self, tensors: dict[str, Any]) -> dict[str, Any]:
        result = self.fn(**tensors)
        if not isinstance(result, dict):
            result = dict(zip(self.output_names, self._tf.nest.flatten(result)))
        return result

    def predict(self, feeds: Feeds) -> Feeds:
        tf = self._tf
        tensors = {s.name: tf.convert_to_tensor(np.asarray(feeds[s.name], dtype=s.dtype)) for s in self.input_specs}
        try:
            result = self._run(tensors)
        except Exception as exc:
            raise InputError(f"TensorFlow could not run signature {self.signature!r} on these inputs: {_first_line(exc)}") from exc
        return {k: _to_numpy(result[k]) for k in self.output_names}

    def export(self, options: LoadOptions) -> ExportOutcome:
        tf = self._tf
        opset = options.opset or DEFAULT_OPSET
        specs = merge_specs(self.input_specs, options.inputs)
        signature = [tf.TensorSpec(_tf_shape(s), tf.as_dtype(s.dtype), name=s.name) for s in specs]
        names = [s.name for s in specs]

        def serve(*args):
            result = self._run(dict(zip(names, args)))
            # Identity gives every output its own tensor, so two outputs that are the same
            # TF tensor still get two ONNX names.
            return {k: tf.identity(result[k]) for k in self.output_names}

        fn = tf.function(serve, input_signature=signature, autograph=False)
        model = _convert(fn, signature, opset, f"tensorflow (SavedModel signature {self.signature!r})")
        _fix_io(model, specs, self.output_names, self._output_shapes)
        fold_captured_inputs(model, fn, names)
        return ExportOutcome(model=model, exporter=f"tf2onnx {_tf2onnx().__version__}", opset=opset)


# --------------------------------------------------------------------------- entry point

def load(source: str | Path, options: LoadOptions) -> SourceModel:
    from onnxkit.foundation.files import preflight

    path = preflight(source, what="source", allow_dir=True)
    if path.is_dir():
        return SavedModelSource(path, options)
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5") or zipfile.is_zipfile(path):
        return KerasSource(path, options)
    raise InputError(
        f"{path.name} is not a TensorFlow model onnxkit can read; give a SavedModel folder, a .keras or an .h5 file",
    )
