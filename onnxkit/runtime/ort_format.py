"""ONNX Runtime's ORT format (``.ort``, what the mobile and minimal builds load) and its
reduced-operator config, written with ONNX Runtime's Python API the way
``onnxruntime.tools.convert_onnx_models_to_ort`` does (fixed optimizations, NCHWc layout
left out so the file is not tied to x86), without its prints or its file naming."""

from __future__ import annotations

import os
from pathlib import Path

# ORT-format files are flatbuffers; their file identifier sits at bytes 4..8.
_ORT_IDENTIFIER = b"ORTM"
_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def is_ort_file(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return head[4:8] == _ORT_IDENTIFIER


def config_path_for(ort_path: str | os.PathLike[str]) -> Path:
    """``model.ort`` -> ``model.required_operators.config`` (the name ONNX Runtime's tool gives it)."""
    p = Path(ort_path)
    return p.with_name(p.stem + ".required_operators.config")


def convert(model_path: str | os.PathLike[str], dest: Path, *, level: str = "all") -> Path:
    """Write ``model_path`` in the ORT format to ``dest`` and its reduced-operator config
    beside it; returns the config's path. Raises ONNX Runtime's own error when it cannot."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.optimized_model_filepath = str(dest)
    so.add_session_config_entry("session.save_model_format", "ORT")
    # what the tool sets for every platform but ARM: QDQ nodes stay as they are
    so.add_session_config_entry("session.qdqisint8allowed", "0")
    disabled = ["NchwcTransformer"] if level == "all" else None
    ort.InferenceSession(os.fspath(model_path), sess_options=so, providers=["CPUExecutionProvider"],
                         disabled_optimizers=disabled)
    if not dest.is_file():
        raise RuntimeError("ONNX Runtime wrote no ORT-format file")
    config = config_path_for(dest)
    import logging

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    create_config_from_models([dest], config, False)
    return config


def required_operators(config: Path) -> list[str]:
    """The config's ``domain;opset;op,op`` lines (its comments left out)."""
    return [ln.strip() for ln in config.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def config_text(config: Path, published_name: str) -> str:
    """The config as it will be published: its header names the file beside it, not the
    temporary path it was generated from."""
    body = required_operators(config)
    return "# Generated from model/s:\n" + f"# - {published_name}\n" + "".join(f"{ln}\n" for ln in body)
