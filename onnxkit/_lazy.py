"""Import optional frameworks on demand, with one line telling what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from onnxkit.errors import MissingDependency

# module -> the extra of onnxkit that installs it
EXTRA_OF: dict[str, str] = {
    "torch": "torch",
    "onnxscript": "torch",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "tf2onnx": "tensorflow",
    "sklearn": "sklearn",
    "skl2onnx": "sklearn",
    "onnxmltools": "sklearn",
    "xgboost": "sklearn",
    "lightgbm": "sklearn",
    "skops": "sklearn",
    "pandas": "sklearn",
    "pyarrow": "sklearn",
    "matplotlib": "reports",
    "onnxconverter_common": "sklearn",
}


def require(module: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        # An ImportError from *inside* an installed package is a broken install, not
        # a missing one; say so rather than suggest reinstalling what is there.
        if exc.name and exc.name.split(".")[0] != top:
            raise MissingDependency(f"{module} (needs {exc.name})", extra or EXTRA_OF.get(top, "all")) from exc
        raise MissingDependency(module, extra or EXTRA_OF.get(top, "all")) from exc
