"""The ``onnxkit pipeline`` configuration: one TOML file, a strict schema, clear errors.

The schema below is the single source for three things: parsing (unknown keys are
errors, because a typo'd gate that is silently ignored passes CI it should fail), the
``onnxkit init`` template (its comments are the ``doc`` strings), and docs/ci.md.

Paths in the file are relative to the folder holding the config file, so a config
checked into a repository works from any working directory.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.operations.config_engine import check_engine, engine_keys
from onnxkit.operations.config_checks import (
    MAX_CONFIG_BYTES,
    batch_problem,
    budget_problem,
    cosine_problem,
    gate_problem,
    text_problem,
    tol_problem,
)
from onnxkit.errors import InputError, UsageError


class ConfigError(UsageError):
    """A config that cannot be run: exit 2, naming the file, the key and the line."""


@dataclass(frozen=True)
class Key:
    name: str
    kind: str            # "str" | "int" | "float" | "bool" | "path" | "list[str]" | "list[int]"
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    optional: bool = False  # None (unset) is a valid value


# Error metrics a ``max_error`` gate may bound: all are "lower is better".
ERROR_METRICS = ("max_abs", "max_rel", "mean_abs", "p99_abs")

SCHEMA: dict[str, list[Key]] = {
    "source": [
        Key("path", "path", None, "The trained model (relative to this file's folder)."),
        Key("framework", "str", None, "torch, tensorflow, sklearn, xgboost, lightgbm, onnx or hf; unset = detect from the file.",
            choices=("torch", "tensorflow", "sklearn", "xgboost", "lightgbm", "onnx", "hf"), optional=True),
        Key("task", "str", None, "Hugging Face folder source: the head to export (feature-extraction, text-classification, "
            "text-generation, ...); unset = from its config.json.", optional=True),
        Key("inputs", "list[str]", [], "Input specs NAME:[d0,d1,...]:DTYPE; a named dim is dynamic. Empty = from the model."),
        Key("trust", "bool", False, "Allow formats that run code on load (pickle, joblib, Keras Lambda)."),
        Key("weights", "path", None, "PyTorch state_dict for a factory source (file.py:function).", optional=True),
        Key("signature", "str", "serving_default", "TensorFlow SavedModel signature."),
        Key("sample", "path", None, "CSV sample for scikit-learn ColumnTransformer column names.", optional=True),
    ],
    "export": [
        Key("exporter", "str", "auto", "PyTorch exporter.", choices=("auto", "dynamo", "torchscript")),
        Key("opset", "int", None, "Target ONNX opset; unset = the exporter's default.", minimum=7, optional=True),
        Key("zipmap", "bool", False, "Keep scikit-learn's ZipMap probability output."),
        Key("random_weights", "bool", False, "PyTorch factory source without [source] weights: export the model exactly "
            "as the factory builds it (its random initialization, or weights it loads itself)."),
    ],
    "output": [
        Key("dir", "path", "onnxkit-out", "Where artifacts go (model.onnx, model.opt.onnx, model.int8.onnx)."),
        Key("name", "str", "model", "Base name of the artifacts."),
    ],
    "validate": [
        Key("enabled", "bool", True, "Compare every artifact against the source model."),
        Key("data", "path", None, "Inputs to validate on (.npz/.npy/.csv/.parquet); unset = seeded random inputs.", optional=True),
        Key("preset", "str", "fp32", "Tolerance preset for the fp32 artifacts.", choices=("fp32", "fp16", "int8", "int4")),
        Key("tol", "list[str]", [], "Extra tolerances: \"ATOL\" or \"OUTPUT=ATOL[:RTOL]\" (glob), as --tol."),
        Key("rtol", "float", None, "Relative tolerance; unset = the preset's.", minimum=0, optional=True),
        Key("batch_sizes", "list[int]", [1, 8], "Batch sizes of the random inputs."),
        Key("samples", "int", None, "Stop after this many samples of the data; unset = all.", minimum=1, optional=True),
        Key("seed", "int", 0, "Seed of the random inputs.", minimum=0),
    ],
    "optimize": [
        Key("enabled", "bool", True, "Run onnxkit optimize on the exported model."),
        Key("mode", "str", None, "auto: try the pass presets and ORT levels, keep those within fp32 tolerance and the "
            "fastest at the largest [bench] batch size (the exported model stays when nothing is faster); fixed: use "
            "preset, level and fp16 below. Unset = auto, unless preset, level or fp16 is set.",
            choices=("auto", "fixed"), optional=True),
        Key("preset", "str", None, "mode fixed: pass preset, default (portable, standard ops) or aggressive (adds ORT "
            "fusions); unset = default.", choices=("default", "aggressive"), optional=True),
        Key("level", "str", None, "mode fixed: also run ONNX Runtime's offline optimizer at this level; unset = no.",
            choices=("basic", "extended", "all"), optional=True),
        Key("fp16", "bool", False, "mode fixed: convert weights and compute to float16 (set tolerance = \"fp16\")."),
        Key("tolerance", "str", "fp32", "Tolerance preset for the optimized model against the source.",
            choices=("fp32", "fp16", "int8", "int4")),
    ],
    "quantize": [
        Key("enabled", "bool", True, "Run onnxkit quantize on the optimized (or exported) model."),
        Key("mode", "str", "auto", "auto (try dynamic int8 variants, and static ones when calib_data or calib_random is "
            "set; keep the fastest within budget, or the float model when nothing quantized is faster), dynamic (weights "
            "int8, no data needed), static (needs calib_data or calib_random), int4 (MatMul weights), fp16.",
            choices=("auto", "dynamic", "static", "int4", "fp16")),
        Key("calib_data", "path", None, "Calibration data for static mode (.npz/.npy/.csv/.parquet).", optional=True),
        Key("calib_random", "int", 0, "Calibrate static mode on this many random samples instead (a poor proxy).", minimum=0),
        Key("budget", "float", None, "Accuracy budget (cosine error); nodes are excluded until met. Unset = 1 - [gates] min_cosine when "
            "that gate is set, else the mode's default.",
            minimum=0, optional=True),
        Key("tolerance", "str", "int8", "Tolerance preset for the quantized model against the source.",
            choices=("fp32", "fp16", "int8", "int4")),
        Key("min_cosine", "float", None, "Lowest cosine of any single sample vs the source; unset = the preset's (int8: 0.99). "
            "Small outputs make per-sample cosine noisy: gate the mean with [gates] min_cosine.", optional=True),
        Key("target_cpu", "str", "portable", "The CPU the quantized model will run on: portable (any AVX2 x86-64 and ARM64: "
            "7-bit weights), avx2, avx512, avx512-vnni, amx, arm64 or native (the machine running the pipeline).",
            choices=("portable", "avx2", "avx512", "avx512-vnni", "amx", "arm64", "native")),
    ],
    "bench": [
        Key("enabled", "bool", True, "Time every artifact (and the source model, for min_speedup)."),
        Key("batch_sizes", "list[int]", [1, 8], "Batch sizes to time."),
        Key("iterations", "int", 50, "Timed runs per batch size.", minimum=1),
        Key("warmup", "int", 5, "Untimed runs first.", minimum=0),
        Key("threads", "int", None, "Intra-op threads of every timed side, the source too; unset = measured (1, 2, 4, ... usable cores, briefly).", minimum=1, optional=True),
        Key("vs_source", "bool", True, "Also time the source framework, side by side (needed by min_speedup)."),
    ],
    "gates": [
        Key("min_speedup", "float", None, "Final model vs the source framework (p50 at the largest batch), e.g. 1.5.",
            minimum=0, optional=True),
        Key("max_size_mb", "float", None, "Size of the final model file, in MB (10^6 bytes).", minimum=0, optional=True),
        Key("max_latency_ms", "float", None, "p99 latency of the final model at any bench batch size, in ms.",
            minimum=0, optional=True),
        Key("min_cosine", "float", None, "Lowest mean cosine similarity of any output of the final model vs the source.",
            optional=True),
    ],
    "gates.max_error": [
        Key(m, "float", None, f"Largest {m} of any output of the final model vs the source.", minimum=0, optional=True)
        for m in ERROR_METRICS
    ],
}

SCHEMA["validate"].extend(engine_keys(Key))

# Every gate name accepted by --gate (and shown in reports).
GATE_NAMES: tuple[str, ...] = tuple(
    [k.name for k in SCHEMA["gates"]] + [f"max_error.{k.name}" for k in SCHEMA["gates.max_error"]]
)


@dataclass
class PipelineConfig:
    """A parsed, checked config; ``sections`` holds every key with defaults filled in."""

    path: Path
    sections: dict[str, dict[str, Any]]
    gates: dict[str, float] = field(default_factory=dict)  # gate name -> threshold, set gates only

    @property
    def base(self) -> Path:
        return self.path.parent

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.sections[section]

    @property
    def output_dir(self) -> Path:
        return self.sections["output"]["dir"]


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Best-effort line of ``key`` in ``[section]`` (tomllib reports no positions for keys)."""
    lines = text.splitlines()
    current = ""
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    for i, line in enumerate(lines, 1):
        m = header.match(line)
        if m:
            current = m.group(1).replace(" ", "")
            if key is None and current == section:
                return i
            continue
        if key is None:
            continue
        m = re.match(r"^\s*([A-Za-z0-9_.\"-]+)\s*=", line)
        if not m:
            continue
        dotted = m.group(1).replace('"', "")
        full = f"{current}.{dotted}" if current else dotted
        if full == (f"{section}.{key}" if section else key):
            return i
    return None


def _where(path: Path, text: str, section: str, key: str | None) -> str:
    line = _line_of(text, section, key)
    return f"{path.name}:{line}" if line else path.name


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(value: Any, key: Key, dotted: str) -> Any:
    """Check one value's type; returns the value in its Python form or raises with why."""
    if value is None:
        return None
    kind = key.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{dotted} must be true or false, not {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{dotted} must be an integer, not {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{dotted} must be a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{dotted} must be finite, not {value!r}")
    elif kind in ("str", "path"):
        if not isinstance(value, str) or (kind == "path" and not value):
            raise ValueError(f"{dotted} must be a non-empty string, not {value!r}" if kind == "path" else f"{dotted} must be a string, not {value!r}")
    elif kind == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{dotted} must be a list of strings, not {value!r}")
    elif kind == "list[int]":
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
            raise ValueError(f"{dotted} must be a non-empty list of positive integers, not {value!r}")
    if key.choices and value not in key.choices:
        raise ValueError(f"{dotted} = {value!r} is not one of {', '.join(key.choices)}")
    if key.minimum is not None and isinstance(value, (int, float)) and value < key.minimum:
        raise ValueError(f"{dotted} = {value!r} must be at least {key.minimum:g}")
    return value


def _meaning_problem(section: str, name: str, value: Any) -> str | None:
    """Why a well-typed value still cannot be meant: a threshold that can never fail (or never
    pass), a batch size no machine could feed."""
    if value is None:
        return None
    dotted = f"{section}.{name}"
    if section == "gates":
        return gate_problem(name, value)
    if section == "gates.max_error":
        return gate_problem(f"max_error.{name}", value)
    if dotted == "quantize.min_cosine":
        return cosine_problem(dotted, value)
    if dotted == "quantize.budget":
        return budget_problem(dotted, value)
    if dotted == "validate.tol":
        return next((p for p in (tol_problem(dotted, t) for t in value) if p), None)
    if name == "batch_sizes":
        return batch_problem(dotted, value)
    return None


def parse_gate_override(text: str) -> tuple[str, float | None]:
    """``--gate NAME=VALUE``; VALUE ``off`` clears a gate set in the config."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name or not raw.strip():
        raise UsageError(f"malformed --gate {text!r}; expected NAME=VALUE, e.g. min_speedup=1.5 or max_error.max_abs=1e-3")
    if name not in GATE_NAMES:
        raise UsageError(f"unknown gate {name!r} in --gate{_suggest(name, list(GATE_NAMES))}; gates: {', '.join(GATE_NAMES)}")
    raw = raw.strip()
    if raw.lower() in ("off", "none"):
        return name, None
    section, key_name = ("gates.max_error", name.split(".", 1)[1]) if name.startswith("max_error.") else ("gates", name)
    key = next(k for k in SCHEMA[section] if k.name == key_name)
    try:
        value = _coerce(float(raw), key, name)
    except ValueError as exc:
        msg = str(exc) if "could not convert" not in str(exc) else f"{name} value {raw!r} is not a number"
        raise UsageError(f"--gate {msg}") from None
    problem = gate_problem(name, value)
    if problem:
        raise UsageError(f"--gate {problem}")
    return name, value


def load_config(path: str | Path, gate_overrides: list[str] | None = None) -> PipelineConfig:
    """Read, check and resolve a pipeline config. Every problem is a ConfigError (exit 2)."""
    from onnxkit.foundation.files import preflight

    # Flag mistakes first: they are the cheapest to report.
    overrides = [parse_gate_override(item) for item in gate_overrides or []]
    cfg_path = preflight(path, what="config")
    text, data = _read_toml(cfg_path)
    sections = _resolve_sections(cfg_path, text, data)
    from onnxkit.operations import pipeline_targets

    sections["targets"] = pipeline_targets.parse_section(cfg_path, text, data)
    _check_inputs_exist(cfg_path, text, sections)
    gates = _gates(sections, overrides)
    _check_combinations(cfg_path, text, sections, gates)
    return PipelineConfig(path=cfg_path, sections=sections, gates=gates)


def _read_toml(cfg_path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and parsed TOML, with bounded size and nesting (a hostile config must
    not take tomllib into a quadratic or recursive corner)."""
    import tomllib

    if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{cfg_path.name} is {cfg_path.stat().st_size} bytes; a pipeline config is at most 1 MiB")
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{cfg_path.name} is not UTF-8 text; is it really a TOML config?") from None
    too_big = text_problem(text)
    if too_big:
        line, why = too_big
        raise ConfigError(f"{cfg_path.name}{f':{line}' if line else ''}: {why}")
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(f"{cfg_path.name}: arrays or tables nested too deeply to be a pipeline config") from None
    except tomllib.TOMLDecodeError as exc:
        # Python 3.14 gives lineno/colno; before, the position is only in the message.
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        if line is None and m:
            line, col = int(m.group(1)), int(m.group(2))
        msg = getattr(exc, "msg", None) or re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        where = f"{cfg_path.name}:{line}" + (f":{col}" if col else "") if line else cfg_path.name
        raise ConfigError(f"{where}: invalid TOML: {msg}", hint="see the file written by `onnxkit init`") from None
    return text, data


def _resolve_sections(cfg_path: Path, text: str, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every section of the schema with its keys checked, coerced and paths resolved beside the config."""
    sections: dict[str, dict[str, Any]] = {}
    top_sections = sorted({s.split(".")[0] for s in SCHEMA} | {"targets"})  # [targets]: pipeline_targets.py
    for name in data:
        if name not in top_sections:
            raise ConfigError(
                f"{_where(cfg_path, text, name, None)}: unknown section [{name}]{_suggest(name, top_sections)}",
                hint=f"sections: {', '.join(top_sections)}",
            )
    for section, keys in SCHEMA.items():
        parts = section.split(".")
        raw: Any = data
        for p in parts:
            raw = raw.get(p, {}) if isinstance(raw, dict) else {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{_where(cfg_path, text, section, None)}: [{section}] must be a table")
        known = {k.name: k for k in keys}
        # Sub-tables of this section are checked as sections of their own.
        subs = {s.split(".", len(parts))[-1] for s in SCHEMA if s.startswith(section + ".")}
        values: dict[str, Any] = {}
        for k, v in raw.items():
            if k in subs:
                continue
            if k not in known:
                options = list(known) + sorted(subs)
                raise ConfigError(
                    f"{_where(cfg_path, text, section, k)}: unknown key '{section}.{k}'{_suggest(k, options)}",
                    hint=f"keys of [{section}]: {', '.join(options)}",
                )
        for key in keys:
            dotted = f"{section}.{key.name}"
            value = raw.get(key.name, key.default)
            try:
                value = _coerce(value, key, dotted)
            except ValueError as exc:
                raise ConfigError(f"{_where(cfg_path, text, section, key.name)}: {exc}") from None
            problem = _meaning_problem(section, key.name, value)
            if problem:
                raise ConfigError(f"{_where(cfg_path, text, section, key.name)}: {problem}")
            if value is None and not key.optional and key.default is None:
                raise ConfigError(f"{cfg_path.name}: missing required key '{dotted}'", hint="`onnxkit init MODEL` writes a complete config")
            if key.kind == "path" and value is not None:
                p = Path(value).expanduser()
                # A factory reference "file.py:function" stays a string, resolved beside the config.
                if dotted == "source.path" and re.match(r"^[^:]+\.py:[A-Za-z_]\w*$", value):
                    target, func = value.rsplit(":", 1)
                    value = f"{(cfg_path.parent / target) if not Path(target).is_absolute() else Path(target)}:{func}"
                else:
                    value = p if p.is_absolute() else cfg_path.parent / p
            values[key.name] = value
        sections[section] = values
    return sections


def _check_inputs_exist(cfg_path: Path, text: str, sections: dict[str, dict[str, Any]]) -> None:
    # Inputs are checked now: a typo'd path must fail in a second, not after an export.
    for section, key in (("source", "path"), ("source", "weights"), ("source", "sample"), ("validate", "data"),
                         ("quantize", "calib_data")):
        value = sections[section][key]
        if value is None:
            continue
        target = Path(str(value).rsplit(":", 1)[0]) if isinstance(value, str) else value
        if not target.exists():
            raise ConfigError(
                f"{_where(cfg_path, text, section, key)}: {section}.{key}: {target} does not exist",
                hint="paths in the config are relative to the config file's folder",
            )


def _gates(sections: dict[str, dict[str, Any]], overrides: list[tuple[str, float | None]]) -> dict[str, float]:
    gates: dict[str, float] = {}
    for k, v in sections["gates"].items():
        if v is not None:
            gates[k] = v
    for k, v in sections["gates.max_error"].items():
        if v is not None:
            gates[f"max_error.{k}"] = v
    for name, value in overrides:
        if value is None:
            gates.pop(name, None)
        else:
            gates[name] = value
    return gates


def _check_combinations(cfg_path: Path, text: str, sections: dict[str, dict[str, Any]], gates: dict[str, float]) -> None:
    """Keys that are fine alone but contradict each other (and fill optimize.mode's default)."""
    o = sections["optimize"]
    pinned = [k for k in ("preset", "level") if o[k] is not None] + (["fp16"] if o["fp16"] else [])
    if o["mode"] is None:
        # An older config that pins a preset or level keeps meaning exactly that.
        o["mode"] = "fixed" if pinned else "auto"
    elif o["mode"] == "auto" and pinned and o["enabled"]:
        raise ConfigError(
            f"{_where(cfg_path, text, 'optimize', pinned[0])}: optimize.{pinned[0]} is set but optimize.mode = \"auto\" "
            "chooses the passes itself",
            hint="set mode = \"fixed\" to pin them, or remove them",
        )
    q = sections["quantize"]
    if q["enabled"] and q["mode"] == "static" and not q["calib_data"] and not q["calib_random"]:
        raise ConfigError(f"{_where(cfg_path, text, 'quantize', 'mode')}: quantize.mode = \"static\" needs calib_data or calib_random",
                          hint="mode = \"dynamic\" needs no calibration data")
    if q["calib_data"] and q["calib_random"]:
        raise ConfigError(f"{_where(cfg_path, text, 'quantize', 'calib_random')}: give quantize.calib_data or calib_random, not both")
    if "min_speedup" in gates and not (sections["bench"]["enabled"] and sections["bench"]["vs_source"]):
        raise ConfigError(
            f"{cfg_path.name}: gate min_speedup needs [bench] enabled = true and vs_source = true",
        )
    if "max_latency_ms" in gates and not sections["bench"]["enabled"]:
        raise ConfigError(f"{cfg_path.name}: gate max_latency_ms needs [bench] enabled = true")
    check_engine(cfg_path.name, sections)
    if any(g.startswith("max_error.") or g == "min_cosine" for g in gates) and not sections["validate"]["enabled"]:
        raise ConfigError(f"{cfg_path.name}: error gates need [validate] enabled = true")
