"""Which framework a source belongs to, decided without importing any framework, and the
one entry point that loads it."""

from __future__ import annotations

import importlib
import re
import zipfile
from pathlib import Path

from onnxkit.foundation.files import describe_magic, preflight, read_head
from onnxkit.errors import InputError, UsageError
from onnxkit.frameworks.base import LoadOptions, SourceModel

# framework name -> module implementing ``load(path, options) -> SourceModel``
FRAMEWORKS: dict[str, str] = {
    "torch": "onnxkit.frameworks.torch_fw",
    "tensorflow": "onnxkit.frameworks.tensorflow_fw",
    "sklearn": "onnxkit.frameworks.sklearn_fw",
    "xgboost": "onnxkit.frameworks.xgboost_fw",
    "lightgbm": "onnxkit.frameworks.lightgbm_fw",
    "onnx": "onnxkit.frameworks.onnx_fw",
    "hf": "onnxkit.frameworks.hf_fw",
}

# "path/to/file.py:function" or "package.module:function"
_FACTORY = re.compile(r"^(?P<target>[^:]+\.py|[A-Za-z_][\w.]*):(?P<func>[A-Za-z_]\w*)$")


def is_factory_ref(source: str) -> bool:
    return bool(_FACTORY.match(source)) and not Path(source).exists()


def detect_framework(source: str | Path) -> str:
    """Guess the framework from the path, suffix and magic bytes."""
    s = str(source)
    if is_factory_ref(s):
        return "torch"
    p = Path(s)
    if p.is_dir():
        preflight(p, what="source", allow_dir=True)
        if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
            return "tensorflow"
        from onnxkit.frameworks.hf_scan import is_hf_folder

        if is_hf_folder(p):
            return "hf"
        raise InputError(f"{p} is a directory but neither a TensorFlow SavedModel (no saved_model.pb) "
                         "nor a Hugging Face save_pretrained folder (no config.json)")
    p = preflight(p, what="source")
    suffix = p.suffix.lower()
    head = read_head(p, 64)
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt2", ".pt", ".pth", ".ts", ".jit"):
        return "torch"
    if suffix in (".keras", ".h5", ".hdf5"):
        return "tensorflow"
    if suffix == ".skops":
        return "sklearn"
    if suffix in (".joblib", ".pkl", ".pickle"):
        return "sklearn"
    if suffix in (".json", ".ubj", ".ubjson", ".xgb"):
        if suffix == ".json" and b"learner" not in head and b"learner" not in p.read_bytes()[:4096]:
            raise InputError(f"{p.name} is JSON but not an XGBoost model (no 'learner' key)")
        return "xgboost"
    if suffix in (".txt", ".lgb", ".lgbm"):
        if head.startswith(b"tree") or b"version=v" in head:
            return "lightgbm"
        raise InputError(f"{p.name} is not a LightGBM text model (no 'tree' header)")
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(p).namelist()
        except zipfile.BadZipFile:
            raise InputError(f"{p.name} looks like a ZIP archive but is corrupt or truncated") from None
        if any(n.endswith("config.json") for n in names) and any(n.endswith(".weights.h5") for n in names):
            return "tensorflow"
        if any("/data.pkl" in n or n.endswith("data.pkl") or "/code/" in n or "serialized_exported_program" in n for n in names):
            return "torch"
        if any(n == "schema.json" for n in names):
            return "sklearn"
    what = describe_magic(head)
    raise UsageError(
        f"cannot tell which framework {p.name} belongs to" + (f" (it looks like {what})" if what else "")
        + "; pass --framework torch|tensorflow|sklearn|xgboost|lightgbm|onnx",
    )


def load_source(source: str | Path, options: LoadOptions | None = None) -> SourceModel:
    """Load a source model with the framework's module (imported here, lazily)."""
    options = options or LoadOptions()
    name = options.framework or detect_framework(source)
    if name not in FRAMEWORKS:
        raise UsageError(f"unknown framework {name!r}; choose from {', '.join(FRAMEWORKS)}")
    module = importlib.import_module(FRAMEWORKS[name])
    return module.load(source, options)
