"""The pipeline's ``[targets]`` gate: the final artifact checked on each deployment target.

``[targets] require = ["cpu", "openvino", "web"]`` runs :func:`onnxkit.operations.targets.run_targets`
on the model the pipeline ends with. A target that cannot run the model or disagrees with
ONNX Runtime CPU fails the run (exit 1); a target that is not available on this machine is an
environment problem (exit 3), found before the first stage so that a long export is not spent
first, unless ``allow_unavailable = true`` (then it is reported as skipped, never as passed).

Kept out of :mod:`onnxkit.operations.config` (the schema of the other sections) and
:mod:`onnxkit.operations.pipeline` (the steps): this module parses its section, checks it up
front and runs the step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxkit.operations.config import ConfigError, Key, _coerce, _suggest, _where
from onnxkit.operations.config_checks import tol_problem

if TYPE_CHECKING:
    from onnxkit.operations.config import PipelineConfig

SECTION = "targets"
KEYS: list[Key] = [
    Key("require", "list[str]", [], "Deployment targets the final model must run on and agree with ONNX Runtime CPU: "
        "cpu, openvino, mobile, web, cuda, tensorrt. Empty = no targets check."),
    Key("allow_unavailable", "bool", False, "A required target that is not available on this machine is reported as "
        "skipped instead of failing the run with exit 3."),
    Key("data", "path", None, "Inputs to run on every target (.npz/.npy/.csv/.parquet); unset = seeded random inputs "
        "(batch 1 and 2).", optional=True),
    Key("preset", "str", None, "Tolerance preset against ONNX Runtime CPU; unset = fp32, or the preset of what the "
        "target ran (fp16 for bf16/f16 compute; for a quantized model, the bounds of one quantized graph on two runtimes).",
        choices=("fp32", "fp16", "int8", "int4"), optional=True),
    Key("tol", "list[str]", [], "Tolerances: \"ATOL\" or \"OUTPUT=ATOL[:RTOL]\" (glob), as --tol."),
    Key("rtol", "float", None, "Relative tolerance; unset = the preset's.", minimum=0, optional=True),
    Key("precision", "str", None, "Inference precision for targets that choose one (openvino: f32, bf16, f16); "
        "unset = the target's own choice.", choices=("f32", "bf16", "f16"), optional=True),
    Key("browser", "str", None, "The web target's browser (a path or a name on PATH; \"none\" = Node.js); unset = "
        "$ONNXKIT_BROWSER, else chromium on PATH, else Node.js.", optional=True),
]


def defaults() -> dict[str, Any]:
    return {k.name: k.default for k in KEYS}


def parse_section(cfg_path: Path, text: str, data: dict[str, Any]) -> dict[str, Any]:
    """``[targets]`` checked and resolved like every other section (unknown keys and target
    names are exit 2, naming the line), paths beside the config."""
    from onnxkit.operations.targets import TARGETS

    raw = data.get(SECTION, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(cfg_path, text, SECTION, None)}: [{SECTION}] must be a table")
    known = [k.name for k in KEYS]
    for k in raw:
        if k not in known:
            raise ConfigError(f"{_where(cfg_path, text, SECTION, k)}: unknown key '{SECTION}.{k}'{_suggest(k, known)}",
                              hint=f"keys of [{SECTION}]: {', '.join(known)}")
    values: dict[str, Any] = {}
    for key in KEYS:
        where = _where(cfg_path, text, SECTION, key.name)
        try:
            value = _coerce(raw.get(key.name, key.default), key, f"{SECTION}.{key.name}")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if key.name == "require":
            names = [v.strip().lower() for v in value]
            unknown = [v for v in names if v not in TARGETS]
            if unknown:
                raise ConfigError(f"{where}: unknown target {unknown[0]!r} in targets.require{_suggest(unknown[0], list(TARGETS))}",
                                  hint=f"targets: {', '.join(TARGETS)}")
            value = list(dict.fromkeys(names))
        elif key.name == "tol":
            problem = next((p for p in (tol_problem(f"{SECTION}.tol", t) for t in value) if p), None)
            if problem:
                raise ConfigError(f"{where}: {problem}")
        elif key.name == "browser" and value is not None:
            from onnxkit.runtime.targets_browser import find_browser

            found, why_not = find_browser(value)
            if found is None and value.lower() != "none":
                raise ConfigError(f"{where}: targets.browser: {why_not}")
        elif key.kind == "path" and value is not None:
            p = Path(value).expanduser()
            value = p if p.is_absolute() else cfg_path.parent / p
            if not value.exists():
                raise ConfigError(f"{where}: targets.data: {value} does not exist",
                                  hint="paths in the config are relative to the config file's folder")
        values[key.name] = value
    if values["tol"] or values["rtol"] is not None:
        # parsed now, as the targets step will: a malformed entry must not wait for the end of the run
        from onnxkit.errors import UsageError
        from onnxkit.foundation.compare import make_tolerance

        try:
            make_tolerance(values["tol"] or None, values["rtol"], values["preset"])
        except UsageError as exc:
            key = "tol" if values["tol"] else "rtol"
            raise ConfigError(f"{_where(cfg_path, text, SECTION, key)}: targets.{key}: {exc.message}") from None
    if not values["require"]:
        set_keys = [k for k in raw if k != "require"]
        if set_keys:
            raise ConfigError(f"{_where(cfg_path, text, SECTION, set_keys[0])}: targets.{set_keys[0]} is set but "
                              "targets.require is empty, so no target would be checked",
                              hint='e.g. require = ["cpu", "openvino", "web"]')
    return values


def preflight(cfg: PipelineConfig) -> None:
    """Before the first stage: a required target that is not available here is exit 3 now,
    not after the export and the benchmarks (unless the config allows it)."""
    from onnxkit.errors import EnvironmentProblem
    from onnxkit.operations.targets import _runner

    t = cfg[SECTION]
    if not t["require"] or t["allow_unavailable"]:
        return
    missing = []
    for name in t["require"]:
        why = _runner(name)[0]()
        if why:
            missing.append(f"{name}: {why}")
    if missing:
        raise EnvironmentProblem(f"{cfg.path.name}: [targets] require names a target not available here: {missing[0]}"
                                 + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                                 hint="install it, remove it from targets.require, or set allow_unavailable = true")


TEMPLATE = """
[targets]
# Check the final model on deployment targets: each must run it and agree with ONNX Runtime CPU
# (exit 1 when one fails or disagrees, 3 when one is not available here). Targets: cpu, openvino,
# mobile (the ORT format), web (onnxruntime-web in headless Chromium, or Node.js; set up once with
# `onnxkit targets --setup web`), cuda, tensorrt.
# require = ["cpu", "openvino", "web"]
# Report a target that is not available here as skipped instead of failing with exit 3.
# allow_unavailable = false
# Inputs for every target; unset = seeded random inputs.
# data = "inputs.npz"
# Tolerance against ONNX Runtime CPU; unset = fp32, or the preset of what the target computed in
# (fp16 for bf16/f16; a quantized model: what one quantized graph may differ by on two runtimes).
# One of: fp32, fp16, int8, int4.
# preset = "fp32"
# tol = ["1e-4"]
# Inference precision for targets that choose one (openvino): f32, bf16 or f16; unset = its own choice.
# precision = "f32"
# The web target's browser (a path or a name on PATH; "none" = Node.js); unset = chromium on PATH, else Node.js.
# browser = "chromium"
"""


def run_step(run: Any, final: Path | None) -> None:
    """The ``targets`` step of a pipeline run (``run`` is its ``_Run``): the final model on
    every required target, recorded with the :class:`~onnxkit.operations.targets.TargetsResult`."""
    from onnxkit.errors import EXIT_ENVIRONMENT
    from onnxkit.operations.pipeline import ERROR, FAILED, PASSED, SKIPPED

    t = run.cfg[SECTION]
    if not t["require"]:
        return
    if final is None or not final.exists():
        run._skip("targets", "no final model")
        return

    def step(rec: Any) -> None:
        res = check_final_model(run.cfg, final)
        rec.result, rec.artifact = res, str(final)
        bad = [o for o in res.targets if o.status in ("failed", "disagrees")]
        missing = [o for o in res.targets if o.status == "unavailable" and o.requested]
        skipped = [o for o in res.targets if o.status == "skipped"]
        if bad:
            rec.status = FAILED
            rec.reason = "; ".join(f"{o.target} {o.status}" + (f" ({o.stage})" if o.stage and o.status == "failed" else "")
                                   + f": {o.reason}" for o in bad)
        elif missing:
            rec.status, rec.exit_code = ERROR, EXIT_ENVIRONMENT
            rec.reason = "; ".join(f"{o.target} unavailable: {o.reason}" for o in missing)
            if not run.result.error_code:
                run.result.error_code = EXIT_ENVIRONMENT
        elif not any(o.status == "passed" for o in res.targets if o.target in t["require"]):
            # allow_unavailable, and none of the targets asked for could run here: cpu (the
            # reference) alone is not what was asked, so nothing is reported as passed
            rec.status = SKIPPED
            rec.reason = "no required target could run here: " + "; ".join(
                f"{o.target}: {o.reason}" for o in skipped)
        else:
            rec.status = PASSED
            ran = [o.target for o in res.targets if o.status == "passed"]
            rec.reason = f"{len(ran)} target(s) agree: {', '.join(ran)}" + (
                f"; skipped (unavailable here): {', '.join(o.target for o in skipped)}" if skipped else "")

    run._record("targets", step)


def check_final_model(cfg: PipelineConfig, final: Path):
    """:func:`run_targets` with the section's settings; with ``allow_unavailable`` an absent
    target becomes ``skipped`` (so it counts neither as passed nor as exit 3)."""
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.operations.targets import run_targets

    t = cfg[SECTION]
    given = bool(t["tol"] or t["rtol"] is not None or t["preset"])
    res = run_targets(
        final, targets=",".join(t["require"]), data=str(t["data"]) if t["data"] else None,
        precision=t["precision"], tolerance=make_tolerance(t["tol"] or None, t["rtol"], t["preset"]),
        tolerance_given=given, seed=cfg["validate"]["seed"], trust=cfg["source"]["trust"], browser=t["browser"],
    )
    if t["allow_unavailable"]:
        for o in res.targets:
            if o.status == "unavailable":
                o.status, o.reason = "skipped", f"not available here: {o.reason}"
        res.passed = res.exit_code == 0
    return res
