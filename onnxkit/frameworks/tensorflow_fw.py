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
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.core.spec import Dim, InputSpec, merge_specs
from onnxkit.errors import ConversionError, InputError, OnnxkitError, UnsafeInput, UsageError
from onnxkit.frameworks import keras_scan
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.passes.fold_constant_inputs import fold_captured_inputs

log = logging.getLogger(__name__)

# tf2onnx 1.17 knows opsets up to 18; 17 is well covered by its handlers and by every
# ONNX Runtime still in use.
DEFAULT_OPSET = 17

_LAMBDA_HAZARD = "a Keras Lambda layer carries Python code that runs at predict() (and while the model is rebuilt on load)"
_LAMBDA_ALTERNATIVE = (
    "replace the Lambda with a registered custom layer class (keras.saving.register_keras_serializable) "
    "and re-save, or pass --trust if you vouch for this file"
)

# Ops a model's serving graph has no business running: they reach the file system or
# call back into the Python interpreter.
_FILE_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "ImmutableConst",
    "WholeFileReader", "WholeFileReaderV2", "TextLineReader", "TextLineReaderV2",
    "FixedLengthRecordReader", "FixedLengthRecordReaderV2", "TFRecordReader", "TFRecordReaderV2",
    "LMDBReader", "TextLineDataset", "TFRecordDataset", "TFRecordDatasetV2",
    "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2", "LMDBDataset", "ExperimentalLMDBDataset",
    "SaveDataset", "SaveDatasetV2", "ExperimentalSaveDataset", "LoadDataset",
    "DatasetToTFRecord", "ExperimentalDatasetToTFRecord", "SnapshotDataset", "SnapshotDatasetV2",
    "CacheDataset", "CacheDatasetV2",
    "CreateSummaryFileWriter", "CreateSummaryDbWriter",
    "DebugIdentityV2", "DebugIdentityV3",
    "LoadAndRemapMatrix", "GenerateVocabRemapping",
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",
})
_PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# What the SavedModel's own checkpoint saver legitimately runs; anywhere else they are
# file writes/reads like any other.
_CHECKPOINT_OPS = frozenset({
    "Save", "SaveV2", "SaveSlices", "Restore", "RestoreV2", "RestoreSlice",
    "MergeV2Checkpoints", "ShardedFilename", "ShardedFilespec",
})
_HAZARDOUS_OPS = _FILE_OPS | _PYTHON_OPS | _CHECKPOINT_OPS

# Patterns that name the failing TF op in tf2onnx / TF error text.
_OP_PATTERNS = (
    re.compile(r"[Uu]nsupported ops?:?\s*Counter\(\{'([A-Za-z0-9_]+)'"),
    re.compile(r"[Uu]nsupported ops?:?\s*\[?'?([A-Za-z0-9_]+)"),
    re.compile(r"op_type\s*[=:]\s*'?([A-Za-z0-9_]+)"),
    re.compile(r"No (?:conversion|handler) (?:function )?(?:registered )?for op:?\s*'?([A-Za-z0-9_]+)"),
)


# --------------------------------------------------------------------------- logging

def _debug() -> bool:
    return logging.getLogger("onnxkit").isEnabledFor(logging.DEBUG)


def _quiet_tensorflow() -> None:
    """TF's C++ log level must be set before TF is imported; absl and tf2onnx log through
    Python logging and print progress unless told otherwise."""
    debug = _debug()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if debug else "3")
    level = logging.DEBUG if debug else logging.ERROR
    for name in ("tensorflow", "tf2onnx", "absl", "keras"):
        logging.getLogger(name).setLevel(level)


def _tf():
    _quiet_tensorflow()
    tf = require("tensorflow")
    if not _debug():
        try:
            tf.get_logger().setLevel(logging.ERROR)
            tf.autograph.set_verbosity(0)
        except Exception:  # pragma: no cover - best effort only
            pass
    return tf


def _tf2onnx():
    _quiet_tensorflow()
    t2o = require("tf2onnx")
    # tf2onnx resets its own logger's level when imported; set it again afterwards. Its
    # ERROR lines ("op X is not supported") repeat what the ConversionError says.
    logging.getLogger("tf2onnx").setLevel(logging.DEBUG if _debug() else logging.CRITICAL)
    return t2o


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------- Keras safety scan

def _iter_class_names(node: Any, owner: str = "?") -> Iterator[tuple[str, str]]:
    """Every (class_name, name of the nearest named layer) in a Keras config, nested
    models included (an iterative walk: configs can be hostile)."""
    for value, _, parent in keras_scan.walk(node):
        if isinstance(value, dict) and isinstance(value.get("class_name"), str):
            cfg = value.get("config")
            name = cfg.get("name") if isinstance(cfg, dict) else None
            yield value["class_name"], str(name or value.get("name") or (owner if parent == "?" else parent))


def _lambda_layers(config: Any) -> list[str]:
    """Layers that carry marshalled Python bytecode: Lambda layers, and any layer given a
    Python ``lambda`` (e.g. as its activation), which Keras 3 stores as ``__lambda__``."""
    found: list[str] = []
    for cls, owner in _iter_class_names(config):
        if cls in ("Lambda", "__lambda__") and owner not in found:
            found.append(owner)
    return found


def _keras_zip_config(path: Path) -> Any:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "config.json" not in names:
                raise InputError(f"{path.name} is a ZIP archive without config.json; not a Keras 3 model file")
            # Keras parses its other JSON members too (metadata.json): bound them all.
            members = {}
            for info in zf.infolist():
                if info.filename.endswith(".json") and "/" not in info.filename:
                    if info.file_size > keras_scan.MAX_CONFIG_BYTES:
                        raise InputError(f"{path.name}: {info.filename} unpacks to {info.file_size:,} bytes; "
                                         "no real Keras config is that large (a corrupt or hostile file)")
                    members[info.filename] = zf.read(info)
    except zipfile.BadZipFile:
        raise InputError(f"{path.name} is not a valid .keras archive (corrupt or truncated ZIP)") from None
    for name, raw in members.items():
        if name != "config.json":
            keras_scan.load_config_json(raw, f"{path.name}: {name}")
    return keras_scan.load_config_json(members["config.json"], f"{path.name}: config.json")


def _h5_config(path: Path) -> Any:
    h5py = require("h5py", "tensorflow")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise InputError(f"{path.name} is not a readable HDF5 file ({_first_line(exc)})") from None
    if raw is None:
        raise InputError(
            f"{path.name} has no model_config: it holds only weights, not a model",
            hint="save the whole model (model.save('model.keras')), or build it in code and export that",
        )
    return keras_scan.load_config_json(raw, f"{path.name}: model_config")


def keras_config(path: Path) -> Any:
    """The model architecture of a Keras file, read as data (no Keras import)."""
    if path.suffix.lower() in (".h5", ".hdf5"):
        return _h5_config(path)
    return _keras_zip_config(path)


def check_keras_safe(path: Path, trust: bool) -> None:
    """Refuse a Keras file with Lambda layers, or Python bytecode anywhere in its config
    (a lambda given as an activation), unless trusted; nothing is loaded."""
    config = keras_config(path)
    lambdas = _lambda_layers(config)
    if lambdas and not trust:
        shown = ", ".join(repr(n) for n in lambdas[:3]) + (f" and {len(lambdas) - 3} more" if len(lambdas) > 3 else "")
        raise UnsafeInput(f"{path.name} has a Lambda layer ({shown}): {_LAMBDA_HAZARD}", hint=_LAMBDA_ALTERNATIVE)
    sites = [] if trust else keras_scan.bytecode_sites(config)
    if sites:
        shown = ", ".join(sites[:3]) + (f" and {len(sites) - 3} more" if len(sites) > 3 else "")
        raise UnsafeInput(
            f"{path.name} carries marshalled Python code in {shown}: a Python lambda saved in a Keras model "
            "runs when the model is rebuilt",
            hint="use a built-in activation or a registered function (keras.saving.register_keras_serializable) "
                 "and re-save, or pass --trust if you vouch for this file",
        )


# --------------------------------------------------------------------------- SavedModel safety scan

def _read_saved_model_proto(folder: Path):
    _tf()  # the proto classes ship with TensorFlow; import it quietly
    from google.protobuf import text_format
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    pb, pbtxt = folder / "saved_model.pb", folder / "saved_model.pbtxt"
    try:
        if pb.exists():
            sm.ParseFromString(pb.read_bytes())
        elif pbtxt.exists():
            text_format.Parse(pbtxt.read_text(encoding="utf-8"), sm)
        else:
            raise InputError(f"{folder} is not a TensorFlow SavedModel (no saved_model.pb)")
    except (DecodeError, text_format.ParseError, UnicodeDecodeError) as exc:
        raise InputError(f"{folder.name}/saved_model.pb is corrupt or not a SavedModel ({_first_line(exc)})") from None
    if not sm.meta_graphs:
        raise InputError(f"{folder.name}/saved_model.pb holds no graph")
    return sm


def _func_refs(attrs) -> Iterator[str]:
    """Names of functions a node calls through its attributes (f, then/else, body, branches...)."""
    for value in attrs.values():
        if value.HasField("func") and value.func.name:
            yield value.func.name
        if value.HasField("list"):
            for fn in value.list.func:
                if fn.name:
                    yield fn.name


def _node_base(ref: str) -> str:
    return ref.lstrip("^").split(":")[0]


def _closure(start: Iterable[str], edges: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        item = todo.pop()
        if item in seen:
            continue
        seen.add(item)
        todo.extend(edges.get(item, ()))
    return seen


def saved_model_hazards(meta_graph) -> list[str]:
    """File-system and Python-callback ops in a SavedModel graph, as ``op (in where)``.

    The checkpoint saver's own subgraph may use the checkpoint ops (that is how variables
    are stored); everything else, serving functions and init ops included, may not.
    """
    graph = meta_graph.graph_def
    nodes = {n.name: n for n in graph.node}
    functions = {f.signature.name: f for f in graph.library.function}
    calls = {name: {ref for nd in f.node_def for ref in _func_refs(nd.attr)} for name, f in functions.items()}

    # The saver subgraph: everything the save/restore targets depend on.
    saver_targets = [_node_base(t) for t in (meta_graph.saver_def.save_tensor_name, meta_graph.saver_def.restore_op_name) if t]
    node_inputs = {name: {_node_base(i) for i in n.input} for name, n in nodes.items()}
    saver_nodes = _closure([t for t in saver_targets if t in nodes], node_inputs)

    def called_by(node_names: Iterable[str]) -> set[str]:
        direct = {ref for name in node_names for ref in _func_refs(nodes[name].attr)}
        return _closure(direct, calls)

    other_nodes = set(nodes) - saver_nodes
    strict_functions = called_by(other_nodes) | (set(functions) - called_by(saver_nodes))
    found: list[str] = []

    def check(op: str, attr, where: str, strict: bool) -> None:
        hazardous = op in _HAZARDOUS_OPS and (strict or op not in _CHECKPOINT_OPS)
        # PrintV2 appends to any file given as its output stream.
        if op == "PrintV2" and "output_stream" in attr and attr["output_stream"].s.startswith(b"file"):
            hazardous = True
        if hazardous:
            found.append(f"{op} (in {where})")

    for name, node in nodes.items():
        check(node.op, node.attr, f"graph node {name}", name not in saver_nodes)
    for name, fn in functions.items():
        for nd in fn.node_def:
            check(nd.op, nd.attr, f"function {name}", name in strict_functions)
    return sorted(set(found))


def check_saved_model_safe(folder: Path, trust: bool):
    """Refuse a SavedModel whose graph touches files or runs Python, unless trusted.

    Returns the parsed proto so the caller can read signatures without loading.
    """
    sm = _read_saved_model_proto(folder)
    if trust:
        return sm
    hazards: list[str] = []
    for mg in sm.meta_graphs:
        hazards.extend(saved_model_hazards(mg))
    if hazards:
        more = f" and {len(hazards) - 2} more" if len(hazards) > 2 else ""
        raise UnsafeInput(
            f"{folder.name} is a SavedModel whose graph reads/writes files or calls Python: "
            f"{'; '.join(hazards[:2])}{more}; running it could touch this machine beyond computing outputs",
            hint="re-export the model without file or py_function ops, or pass --trust if you vouch for this SavedModel",
        )
    return sm


# --------------------------------------------------------------------------- shapes and names

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
        self.input_specs = merge_specs(model_specs, options.inputs)
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
    from onnxkit.core.files import preflight

    path = preflight(source, what="source", allow_dir=True)
    if path.is_dir():
        return SavedModelSource(path, options)
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5") or zipfile.is_zipfile(path):
        return KerasSource(path, options)
    raise InputError(
        f"{path.name} is not a TensorFlow model onnxkit can read; give a SavedModel folder, a .keras or an .h5 file",
    )
