"""Safety before loading a TensorFlow / Keras file, by reading it as data.

A Keras ``Lambda`` layer (or a lambda activation) is marshalled Python bytecode that runs when
the model is rebuilt, and a SavedModel graph can read, write or glob files or call back into
Python. Both are found here without TensorFlow executing anything: the ``.keras`` zip's
``config.json``, the ``.h5`` ``model_config`` attribute and the ``saved_model.pb`` protobuf
are read as data, and refused without ``--trust``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from onnxkit._lazy import require
from onnxkit.errors import InputError, UnsafeInput
from onnxkit.frameworks import keras_scan

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


# What TensorFlow's C++ side writes straight to fd 2 at import, before absl's logging is set
# up, so TF_CPP_MIN_LOG_LEVEL cannot silence it (oneDNN's "custom operations are on" notice).
_IMPORT_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\])")


@contextlib.contextmanager
def _filtered_fd2() -> Iterator[None]:
    """Hold fd 2 in a temporary file while TF imports; give back every line that is not
    import-time info noise (all of it if the import fails)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to filter
        yield
        return
    failed = True
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [ln for ln in lines if failed or not _IMPORT_NOISE.match(ln)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _tf():
    _quiet_tensorflow()
    if _debug() or "tensorflow" in sys.modules:
        tf = require("tensorflow")
    else:
        with _filtered_fd2():
            tf = require("tensorflow")
    if not _debug():
        try:
            tf.get_logger().setLevel(logging.ERROR)
            tf.autograph.set_verbosity(0)
        except Exception:  # pragma: no cover - best effort only
            pass
    return tf


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


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
