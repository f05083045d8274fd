"""``onnxkit pipeline``: export -> validate -> optimize -> validate -> quantize -> validate ->
bench, as one configured run, then gates and reports.

Each step calls the core function of its command (``export_model``, ``validate_models``,
``optimize_model``, ``quantize_model``, the bench core) and keeps that command's typed
result. A step that fails is recorded and the run goes on where the next step still has
an input, so one CI run reports everything it can; a step whose input is missing is
recorded as skipped with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.operations.config import PipelineConfig
from onnxkit.operations.gates import GateOutcome, evaluate_gates
from onnxkit.operations.provenance import Provenance
from onnxkit.errors import EXIT_CHECK_FAILED, EXIT_OK, Interrupted, OnnxkitError

from onnxkit.operations.gate_text import gate_condition
from onnxkit.results import Result, Table, fmt_bytes, to_jsonable

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

PASSED, FAILED, SKIPPED, ERROR = "passed", "failed", "skipped", "error"


@dataclass
class StepRecord:
    """One step of the run, with the typed result of the command it ran."""

    name: str
    status: str = SKIPPED
    seconds: float = 0.0
    reason: str = ""
    exit_code: int = 0
    artifact: str | None = None
    result: Result | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "seconds": self.seconds, "reason": self.reason,
            "exit_code": self.exit_code, "artifact": self.artifact,
            "result": self.result.to_dict() if self.result is not None else None,
        }


@dataclass
class PipelineResult(Result):
    config: str = ""
    source: str = ""
    output_dir: str = ""
    report_dir: str = ""
    final_model: str | None = None
    final_variant: str | None = None  # its role: exported, optimized or quantized
    steps: list[StepRecord] = field(default_factory=list)
    gates: list[GateOutcome] = field(default_factory=list)
    provenance: Provenance | None = None
    reports: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error_code: int = 0  # the exit code of the first step that raised, if any

    @property
    def exit_code(self) -> int:
        if self.error_code:
            return self.error_code
        return EXIT_OK if self.passed else EXIT_CHECK_FAILED

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)

    def failures(self) -> list[str]:
        out = [f"step {s.name}: {s.status}" + (f" ({s.reason})" if s.reason else "") for s in self.steps if s.status in (FAILED, ERROR)]
        out += [f"gate {gate_condition(g)}" for g in self.gates if not g.passed]
        return out

    def tables(self) -> list[Table]:
        steps = Table("Pipeline steps", ["step", "status", "time", "artifact", "detail"], [
            [s.name, s.status.upper() if s.status in (FAILED, ERROR) else s.status, f"{s.seconds:.2f} s",
             Path(s.artifact).name if s.artifact else "-", s.reason or "-"]
            for s in self.steps
        ])
        tables = [steps]
        if self.gates:
            tables.append(Table("Gates", ["gate", "threshold", "actual", "verdict", "detail"], [
                [g.name, g.threshold, g.actual if g.actual is not None else "not measured", g.status if g.passed else g.status.upper(), g.detail or "-"]
                for g in self.gates
            ]))
        targets = self.step("targets")
        if targets is not None and targets.result is not None:
            tables += targets.result.tables()
        if self.provenance and self.provenance.artifacts:
            tables.append(Table("Artifacts", ["role", "file", "size", "sha256", "opsets"], [
                [a.role, a.path, fmt_bytes(a.size), a.sha256[:16] + "...", ", ".join(f"{d} {v}" for d, v in a.opsets.items()) or "-"]
                for a in self.provenance.artifacts
            ]))
        if self.reports:
            tables.append(Table("Reports", ["kind", "path"], [[k, v] for k, v in self.reports.items()]))
        return tables

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command, "verdict": self.verdict, "exit_code": self.exit_code, "passed": self.passed,
            "config": self.config, "source": self.source, "output_dir": self.output_dir, "report_dir": self.report_dir,
            "final_model": self.final_model, "final_variant": self.final_variant, "seconds": self.seconds,
            "steps": [s.to_dict() for s in self.steps],
            "gates": [to_jsonable(g) | {"line": g.line} for g in self.gates],
            "failures": self.failures(),
            "provenance": to_jsonable(self.provenance) if self.provenance else None,
            "reports": self.reports, "notes": self.notes,
        }


# --------------------------------------------------------------------------- steps


def _artifact_suffix(mode: str) -> str:
    return {"auto": "int8", "dynamic": "int8", "static": "int8", "int4": "int4", "fp16": "fp16"}.get(mode, mode)


class _Run:
    """The state of one pipeline run, step by step."""

    def __init__(self, cfg: PipelineConfig, progress: Progress | None) -> None:
        self.cfg = cfg
        self.progress = progress or (lambda _msg: None)
        self.result = PipelineResult(command="pipeline", config=str(cfg.path))
        self.source_model: Any = None   # the loaded SourceModel, shared by every step
        self.data: Any = None
        # (role, path, validation step name) of each ONNX artifact, in order.
        self.artifacts: list[tuple[str, Path, str]] = []

    def _record(self, name: str, fn: Callable[[StepRecord], None]) -> StepRecord:
        rec = StepRecord(name=name)
        self.result.steps.append(rec)
        self.progress(f"{name} ...")
        t0 = time.perf_counter()
        try:
            fn(rec)
        except KeyboardInterrupt:
            raise Interrupted() from None
        except OnnxkitError as exc:
            rec.status, rec.exit_code = ERROR, exc.exit_code
            rec.reason = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            if not self.result.error_code:
                self.result.error_code = exc.exit_code
        rec.seconds = time.perf_counter() - t0
        self.progress(f"{name}: {rec.status}" + (f" ({rec.reason})" if rec.status != PASSED and rec.reason else ""))
        return rec

    def _skip(self, name: str, reason: str) -> None:
        self.result.steps.append(StepRecord(name=name, status=SKIPPED, reason=reason))
        self.progress(f"{name}: skipped ({reason})")

    # -- export

    def export(self) -> None:
        from onnxkit.operations.export import export_model
        from onnxkit.foundation.spec import parse_specs
        from onnxkit.frameworks.base import LoadOptions
        from onnxkit.frameworks.registry import load_source

        src, exp = self.cfg["source"], self.cfg["export"]
        out = self.cfg.output_dir / f"{self.cfg['output']['name']}.onnx"

        def run(rec: StepRecord) -> None:
            options = LoadOptions(
                framework=src["framework"], trust=src["trust"], inputs=parse_specs(src["inputs"]),
                weights=src["weights"], signature=src["signature"], sample=src["sample"],
                exporter=exp["exporter"], opset=exp["opset"], zipmap=exp["zipmap"], random_weights=exp["random_weights"],
            )
            self.source_model = load_source(str(src["path"]), options)
            # Validation happens in the next step, against the same loaded source, so that
            # every artifact is compared the same way (and on the configured data).
            res = export_model(str(src["path"]), out, options, validate=False, loaded=self.source_model)
            res.notes = [n for n in res.notes if "--no-validate" not in n]
            rec.result, rec.artifact = res, res.output
            rec.status = PASSED if res.passed else FAILED
            if not res.passed:
                rec.reason = "; ".join(res.checker_problems[:2]) or "export check failed"
            self.artifacts.append(("exported", Path(res.output), "validate export"))

        self._record("export", run)

    # -- validate

    def validate(self, step: str, role: str, path: Path, preset: str, min_cosine: float | None = None) -> None:
        from onnxkit.foundation.compare import make_tolerance
        from onnxkit.foundation.data import open_data
        from onnxkit.operations.validate import validate_models
        from onnxkit.runtime.session import make_session

        v = self.cfg["validate"]

        def run(rec: StepRecord) -> None:
            on_ray = v["engine"] == "ray"  # Ray actors open their own sessions, on the shards of data
            session = None if on_ray else make_session(path)
            specs = session.input_specs if session is not None else []
            data = open_data(v["data"], specs) if v["data"] is not None and not on_ray else None
            # Per-output --tol entries are for fp32 artifacts; a lossy stage is held to its preset.
            same = preset == v["preset"]
            tolerance = make_tolerance(v["tol"] if same else None, v["rtol"] if same else None, preset=preset, min_cosine=min_cosine)
            if on_ray:
                from onnxkit.operations.validate_ray import validate_stage_on_ray

                res = validate_stage_on_ray(self.cfg, path, tolerance)
            else:
                res = validate_models(
                    self.source_model.predict, session.run, specs,
                    tolerance=tolerance,
                    reference_name=f"{self.source_model.framework} {Path(str(self.cfg['source']['path'])).name}",
                    candidate_name=path.name,
                    data=data,
                    batch_sizes=tuple(v["batch_sizes"]),
                    samples=v["samples"],
                    seed=v["seed"],
                    accepts_nan=bool(getattr(self.source_model, "accepts_nan", False)),
                )
            res.command = step
            rec.result, rec.artifact = res, str(path)
            rec.status = PASSED if res.passed else FAILED
            if not res.passed:
                bad = [o.name for o in res.outputs if not o.passed]
                rec.reason = f"out of {preset} tolerance: {', '.join(bad)}"

        self._record(step, run)

    # -- optimize

    def optimize(self, model: Path) -> None:
        from onnxkit.operations.optimize import optimize_model

        o = self.cfg["optimize"]
        out = self.cfg.output_dir / f"{self.cfg['output']['name']}.opt.onnx"

        def run(rec: StepRecord) -> None:
            if o["mode"] == "auto":
                self._auto_optimize(rec, model, out)
                return
            # Its own validation (vs the exported ONNX) and latency probe would duplicate the
            # pipeline's validation against the source and its bench step.
            res = optimize_model(model, out, preset=o["preset"], level=o["level"], fp16=o["fp16"],
                                 validate=False, latency=False, trust=self.cfg["source"]["trust"],
                                 probe=not self.cfg["source"]["trust"])
            res.notes = [n for n in res.notes if "--no-validate" not in n]
            rec.result, rec.artifact = res, str(out)
            rec.status = PASSED if res.passed else FAILED
            rec.reason = f"{res.nodes_before} -> {res.nodes_after} nodes"
            self.artifacts.append(("optimized", out, "validate optimized"))

        self._record("optimize", run)

    def _auto_args(self) -> dict[str, Any]:
        """What the automatic choices share with the bench step: its batch sizes, iteration
        counts and threads, and the source model to say when ONNX does not pay off."""
        b = self.cfg["bench"]
        return {"batch_sizes": tuple(b["batch_sizes"]), "iterations": b["iterations"], "warmup": b["warmup"],
                "threads": b["threads"], "source": self.source_model if b["enabled"] and b["vs_source"] else None,
                "write_input": False, "seed": self.cfg["validate"]["seed"], "trust": self.cfg["source"]["trust"],
                "probe": not self.cfg["source"]["trust"]}

    def _auto_optimize(self, rec: StepRecord, model: Path, out: Path) -> None:
        from onnxkit.operations.autotune import auto_optimize

        v = self.cfg["validate"]
        res = auto_optimize(model, out, data=v["data"], tol=v["tol"], rtol=v["rtol"], **self._auto_args())
        rec.result = res
        rec.status = PASSED if res.passed else FAILED
        if res.output:
            rec.artifact = str(out)
            self.artifacts.append(("optimized", out, "validate optimized"))
            rec.reason = f"auto: chose {res.chosen}"
        else:
            # Nothing beat the input: no second copy of the same model to validate and time,
            # and no stale one from an earlier run left to be mistaken for this run's.
            out.unlink(missing_ok=True)
            rec.reason = f"auto: kept {model.name}, no optimized variant is faster at batch {res.decide_batch}"

    # -- quantize

    def quantize(self, model: Path) -> None:
        from onnxkit.operations.quantize import quantize_model

        q = self.cfg["quantize"]
        out = self.cfg.output_dir / f"{self.cfg['output']['name']}.{_artifact_suffix(q['mode'])}.onnx"
        data = self.cfg["validate"]["data"]

        def run(rec: StepRecord) -> None:
            if q["mode"] == "auto":
                self._auto_quantize(rec, model, out)
                return
            res = quantize_model(
                model, out, mode=q["mode"],
                calib_data=str(q["calib_data"]) if q["calib_data"] else None,
                calib_random=q["calib_random"],
                max_error=self._quantize_budget(),
                data=str(data) if data else None,
                seed=self.cfg["validate"]["seed"],
                latency=False,
                trust=self.cfg["source"]["trust"],
                probe=not self.cfg["source"]["trust"],
                target_cpu=q["target_cpu"],
            )
            rec.result, rec.artifact = res, str(out)
            rec.status = PASSED if res.passed else FAILED
            rec.reason = f"{res.nodes_quantized} node(s) quantized"
            if res.budget_met is False:
                rec.reason += "; accuracy budget missed"
            self.artifacts.append(("quantized", out, "validate quantized"))

        from onnxkit.operations.quantize.checks import skip_when_nothing_quantized

        self._record("quantize", skip_when_nothing_quantized(run, SKIPPED))

    def _quantize_budget(self) -> float | None:
        """[quantize] budget, else what the min_cosine gate will demand of the final model, less
        a tenth: the gate is measured on other samples (MiniLM on random inputs: 0.99052 for
        quantize, 0.98988 for the gate). A quantized model the gate then fails wastes the run;
        quantize's own default is looser when it can only measure on random inputs."""
        budget = self.cfg["quantize"]["budget"]
        gate = self.cfg.gates.get("min_cosine")
        if budget is None and gate is not None:  # the budget is a cosine error, like the gate
            return max(0.0, 0.9 * (1.0 - float(gate)))
        return budget

    def _auto_quantize(self, rec: StepRecord, model: Path, out: Path) -> None:
        from onnxkit.operations.autotune import auto_quantize

        q = self.cfg["quantize"]
        data = self.cfg["validate"]["data"]
        res = auto_quantize(
            model, out, calib_data=str(q["calib_data"]) if q["calib_data"] else None, calib_random=q["calib_random"],
            data=str(data) if data else None, max_error=self._quantize_budget(), **self._auto_args(),
            target_cpu=q["target_cpu"],
        )
        rec.result = res
        rec.status = PASSED if res.passed else FAILED
        if res.output:
            rec.artifact = str(out)
            self.artifacts.append(("quantized", out, "validate quantized"))
            rec.reason = f"auto: chose {res.chosen}"
            return
        out.unlink(missing_ok=True)  # a stale file from an earlier run is not this run's artifact
        if res.passed:
            rec.reason = f"auto: kept {model.name}, no quantized variant is faster at batch {res.decide_batch}"
        else:
            rec.reason = f"auto: no quantized variant meets the accuracy budget ({res.budget})"

    # -- bench

    def bench(self) -> None:
        from onnxkit.foundation.data import random_feeds
        from onnxkit.runtime.bench import bench_models
        from onnxkit.runtime.session import make_session

        b = self.cfg["bench"]
        arts = [(role, p) for role, p, _ in self.artifacts if p.exists()]
        if not arts:
            self._skip("bench", "no artifact to time")
            return

        def run(rec: StepRecord) -> None:
            specs = make_session(arts[0][1]).input_specs
            seed = self.cfg["validate"]["seed"]
            feeds = {n: random_feeds(specs, batch=n, seed=seed) for n in b["batch_sizes"]}
            # Named by role so reports and gates say "quantized", not a file name.
            res = bench_models(
                [str(p) for _, p in arts], feeds,
                threads=b["threads"] or "auto", warmup=b["warmup"], iterations=b["iterations"],
                source=self.source_model if b["vs_source"] else None,
                trust=self.cfg["source"]["trust"],
                names=[role for role, _ in arts],
            )
            rec.result = res
            rec.status = PASSED if res.passed else FAILED
            top = max(b["batch_sizes"])
            final = res.entry(arts[-1][0], top)
            if final is not None:
                rec.reason = f"{arts[-1][0]} p50 {final.stats.p50_ms:.3f} ms at batch {top}" + (
                    f", {final.speedup_vs_source:.2f}x vs source" if final.speedup_vs_source is not None else "")

        self._record("bench", run)


# --------------------------------------------------------------------------- run


def run_pipeline(cfg: PipelineConfig, *, progress: Progress | None = None) -> PipelineResult:
    """Run every configured step; evaluate gates; collect provenance. Reports are written
    by :func:`write_reports` so a caller can choose where."""
    from onnxkit.operations import provenance as prov

    t0 = time.perf_counter()
    from onnxkit.operations.hf_pipeline import run_class

    run = run_class(cfg)(cfg, progress)  # a Hugging Face folder source has steps of its own
    res = run.result
    res.source = str(cfg["source"]["path"])
    res.output_dir = str(cfg.output_dir)
    try:
        cfg.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from onnxkit.errors import EnvironmentProblem

        raise EnvironmentProblem(f"cannot create the output folder {cfg.output_dir}: {exc.strerror}") from None

    validate_on = cfg["validate"]["enabled"]
    run.export()
    exported = run.artifacts[-1][1] if run.artifacts else None
    if exported is None:
        for name in ("validate export", "optimize", "validate optimized", "quantize", "validate quantized", "bench"):
            run._skip(name, "no exported model")
    else:
        if validate_on:
            run.validate("validate export", "exported", exported, cfg["validate"]["preset"])
        else:
            run._skip("validate export", "disabled in the config")
        current = exported
        if cfg["optimize"]["enabled"]:
            n = len(run.artifacts)
            run.optimize(current)
            current = _validate_new_artifact(
                run, n, current, "optimize", "optimized", validate_on, (cfg["optimize"]["tolerance"],),
                kept="optimize kept the exported model (no variant was faster)",
            )
        else:
            run._skip("optimize", "disabled in the config")
            run._skip("validate optimized", "optimize is disabled")
        if cfg["quantize"]["enabled"]:
            n = len(run.artifacts)
            quant_input = current
            if current != exported and _has_runtime_fusions(current):
                # ORT's own fusions (FusedConv, ...) hide convolutions from the static
                # quantizer (measured: int8 1.06x instead of 2.9x on a ResNet); quantize the
                # portable graph, ORT fuses the quantized one again when it loads it.
                quant_input = exported
                res.notes.append(f"quantized {Path(exported).name}: {Path(current).name} holds ONNX Runtime fused ops the quantizer cannot handle")
            run.quantize(quant_input)
            current = _validate_new_artifact(
                run, n, current, "quantize", "quantized", validate_on,
                (cfg["quantize"]["tolerance"], cfg["quantize"]["min_cosine"]),
                kept="quantize kept the float model (no quantized variant was faster)",
            )
        else:
            run._skip("quantize", "disabled in the config")
            run._skip("validate quantized", "quantize is disabled")
        res.final_model = str(current)
        res.final_variant = next(role for role, p, _ in run.artifacts if p == current)
        if cfg["bench"]["enabled"]:
            run.bench()
        else:
            run._skip("bench", "disabled in the config")
    from onnxkit.operations.pipeline_targets import run_step as targets_step

    targets_step(run, Path(res.final_model) if res.final_model else None)

    res.gates = evaluate_gates(res, cfg.gates)
    # Digests: the source as export records it (a factory's file plus weights), then each artifact.
    exp = res.step("export")
    src_digest = getattr(exp.result, "source_sha256", None) if exp and exp.result else None
    arts = []
    src_path = Path(str(cfg["source"]["path"]).rsplit(":", 1)[0]) if not Path(str(cfg["source"]["path"])).exists() else Path(str(cfg["source"]["path"]))
    if src_path.exists():
        arts.append(prov.artifact("source", src_path, digest=src_digest))
    arts += prov.input_artifacts(cfg)
    arts += [prov.artifact(role, p) for role, p, _ in run.artifacts if p.exists()]
    bench_step = res.step("bench")
    res.provenance = prov.collect(arts, threads=prov.bench_threads(bench_step.result if bench_step else None))
    res.passed = all(s.status in (PASSED, SKIPPED) for s in res.steps) and all(g.passed for g in res.gates)
    res.seconds = time.perf_counter() - t0
    return res


# --------------------------------------------------------------------------- reports


def validation_stages(res: PipelineResult) -> list[tuple[str, list[dict[str, Any]]]]:
    """(stage, [OutputComparison dicts]) of every validation that ran, for plots."""
    out = []
    for s in res.steps:
        if s.name.startswith("validate ") and s.result is not None:
            out.append((s.name.removeprefix("validate "), [o.to_dict() for o in s.result.outputs]))
    return out


def _validate_new_artifact(run: _Run, before: int, current: Path, step: str, role: str, validate_on: bool,
                           validate_args: tuple, *, kept: str) -> Path:
    """After an optimize or quantize step: validate the artifact it produced (or say why its
    validation is skipped) and return the model the chain goes on with."""
    name = f"validate {role}"
    if len(run.artifacts) > before:
        current = run.artifacts[-1][1]
        if validate_on:
            run.validate(name, role, current, *validate_args)
        else:
            run._skip(name, "disabled in the config")
        return current
    st = run.result.step(step)
    run._skip(name, kept if st is not None and st.status == PASSED else f"{step} did not produce a model")
    return current


def _has_runtime_fusions(path: Path) -> bool:
    """Does the graph hold ONNX Runtime's CPU fusions (com.microsoft Fused*, NCHWc ops)?"""
    from onnxkit.foundation.onnx_io import _iter_graphs, load_onnx

    graph = load_onnx(path, load_external=False).model.graph
    return any(
        (n.domain == "com.microsoft" and n.op_type.startswith("Fused")) or n.domain == "com.microsoft.nchwc"
        for g in _iter_graphs(graph) for n in g.node
    )
