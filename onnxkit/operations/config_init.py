"""`onnxkit init`: a commented starter config for a source, every key of the schema shown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import UsageError
from onnxkit.operations.config import ERROR_METRICS, SCHEMA
from onnxkit.results import Result, Table


# --------------------------------------------------------------------------- template


def _toml_value(v: Any) -> str:
    import json

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Path):
        v = v.as_posix()
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def render_template(values: dict[str, dict[str, Any]], header: list[str] | None = None) -> str:
    """A commented TOML config: every key of the schema, ``values`` overriding defaults.

    Unset optional keys are written commented out, so users see what they can set.
    """
    lines = [f"# {h}" if h else "#" for h in (header or [])]
    for section, keys in SCHEMA.items():
        lines.append("")
        lines.append(f"[{section}]")
        given = values.get(section, {})
        for key in keys:
            value = given.get(key.name, key.default)
            doc = key.doc + (f" One of: {', '.join(key.choices)}." if key.choices and "torch, tensorflow" not in key.doc else "")
            lines.append(f"# {doc}")
            if value is None:
                example = {"min_speedup": 1.0, "max_size_mb": 100.0, "max_latency_ms": 50.0, "min_cosine": 0.99,
                           "max_abs": 0.05, "max_rel": 1.0, "mean_abs": 0.01, "p99_abs": 0.02,
                           "opset": 18, "threads": 1, "samples": 1000, "rtol": 1e-3, "weights": "state.pt",
                           "sample": "sample.csv", "data": "inputs.npz", "calib_data": "calib.npz", "level": "extended",
                           "preset": "aggressive", "mode": "auto",
                           "budget": 0.01}.get(key.name)
                lines.append(f"# {key.name} = {_toml_value(example) if example is not None else '...'}")
            else:
                lines.append(f"{key.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- onnxkit init

# The opset written into a new config, per framework: the newest each exporter handles
# well with the pinned versions (torch's dynamo exporter targets 18; tf2onnx is
# conservative). None leaves the exporter's own default, written commented out.
INIT_OPSET: dict[str, int | None] = {"torch": 18, "tensorflow": 17}


@dataclass
class InitResult(Result):
    """What ``onnxkit init`` wrote."""

    config: str = ""
    source: str = ""
    framework: str = ""
    inputs: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [Table("onnxkit init", ["property", "value"], [
            ["config", self.config], ["source", self.source], ["framework", self.framework],
            ["inputs", "; ".join(self.inputs) or "-"], ["next", f"onnxkit pipeline {self.config}"],
        ])]


def spec_text(spec: Any) -> str:
    """An InputSpec as config text; an unnamed dynamic dim gets a name, since '?' does not parse."""
    import numpy as np

    dims = ",".join(str(d) if d is not None else f"{spec.name}_dim{i}" for i, d in enumerate(spec.shape))
    return f"{spec.name}:[{dims}]:{np.dtype(spec.dtype).name}"


def _rel(target: Path, base: Path) -> str:
    import os

    try:
        return Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return target.resolve().as_posix()


def init_config(
    source: str | Path,
    output: str | Path = "onnxkit.toml",
    *,
    framework: str | None = None,
    inputs: list[str] | None = None,
    trust: bool = False,
    force: bool = False,
    weights: str | Path | None = None,
    random_weights: bool = False,
) -> InitResult:
    """Load ``source`` to learn its framework and inputs; write a commented starter config.

    Refuses to overwrite an existing file unless ``force``; the write is atomic.
    """
    from onnxkit import __version__
    from onnxkit.operations.export import check_weights_options
    from onnxkit.foundation.files import check_output_path, write_text_atomic
    from onnxkit.foundation.spec import parse_specs
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.registry import detect_framework, is_factory_ref, load_source

    out = Path(output)
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    if out.exists() and out.is_dir():
        raise UsageError(f"{out} is a directory; give a file name such as {out / 'onnxkit.toml'}")
    s = str(source)
    factory = is_factory_ref(s)
    fw = framework or detect_framework(s)
    user_specs = parse_specs(inputs)
    options = LoadOptions(framework=fw, trust=trust, inputs=user_specs,
                          weights=Path(weights) if weights is not None else None, random_weights=random_weights)
    check_weights_options(s, options)
    check_output_path(out, s, weights)  # before the source is loaded; a factory's .py counts
    model = load_source(s, options)
    specs = user_specs or list(model.input_specs)
    base = out.parent if str(out.parent) else Path(".")
    if factory:
        target, func = s.rsplit(":", 1)
        src_value = f"{_rel(Path(target), base)}:{func}"
    else:
        src_value = _rel(Path(s), base)
    tree_model = fw in ("sklearn", "xgboost", "lightgbm")
    values: dict[str, dict[str, Any]] = {
        "source": {"path": src_value, "framework": fw, "inputs": [spec_text(sp) for sp in specs], "trust": trust,
                   "weights": _rel(Path(weights), base) if weights is not None else None},
        "export": {"opset": INIT_OPSET.get(fw), "random_weights": random_weights},
        "output": {"dir": "onnxkit-out", "name": Path(s.rsplit(":", 1)[0] if factory else s).stem or "model"},
        # Tree ensembles and pipelines gain little from graph passes or int8 weights.
        "optimize": {"enabled": not tree_model, "mode": "auto"},
        # Per-sample cosine of a few-wide output swings with int8 rounding; the run's accuracy
        # verdict is the mean-cosine gate below, the stage check only catches a broken model.
        "quantize": {"enabled": not tree_model, "min_cosine": 0.95},
        "gates": {"min_cosine": 0.99},
    }
    if fw == "hf":
        from onnxkit.operations.hf_config import init_values

        init_values(values, model)
    header = [
        f"onnxkit pipeline config, written by onnxkit {__version__} `onnxkit init` for {Path(s).name} ({fw}).",
        "Run: onnxkit pipeline " + out.name + " [--report-dir DIR] [--junit FILE] [--gate NAME=VALUE]... [--json]",
        "Paths are relative to this file's folder. Unknown keys are errors.",
        "Gates (section [gates], override with --gate NAME=VALUE, VALUE `off` clears one): min_speedup, max_size_mb,",
        "max_latency_ms, min_cosine, max_error.METRIC (METRIC: " + ", ".join(ERROR_METRICS) + "), e.g. --gate max_error.max_abs=1e-3.",
        "Error gates apply to the final model (the last artifact) against the source model.",
    ]
    from onnxkit.operations.pipeline_targets import TEMPLATE

    text = render_template(values, header) + TEMPLATE
    write_text_atomic(out, text)

    return InitResult(command="init", config=str(out), source=s, framework=fw, inputs=values["source"]["inputs"])
