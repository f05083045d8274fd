"""onnxkit: from a trained model to a verified, optimized ONNX file, and running it.

The Python API mirrors the CLI; every name is imported on first use so that
``import onnxkit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_API = {
    "inspect_model": "onnxkit.operations.inspect:inspect_model",
    "load_onnx": "onnxkit.foundation.onnx_io:load_onnx",
    "save_onnx": "onnxkit.foundation.onnx_io:save_onnx",
    "parse_spec": "onnxkit.foundation.spec:parse_spec",
    "InputSpec": "onnxkit.foundation.spec:InputSpec",
    "Tolerance": "onnxkit.foundation.compare:Tolerance",
    "make_tolerance": "onnxkit.foundation.compare:make_tolerance",
    "Comparator": "onnxkit.foundation.compare:Comparator",
    "load_source": "onnxkit.frameworks.registry:load_source",
    "export_model": "onnxkit.operations.export:export_model",
    "validate": "onnxkit.operations.validate_files:validate_files",
    "make_session": "onnxkit.runtime.session:make_session",
}


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'onnxkit' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["__version__", *_API]
