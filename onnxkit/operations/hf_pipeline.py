"""``onnxkit pipeline`` whose ``[source] path`` is a Hugging Face ``save_pretrained`` folder:
export to a folder, validate on the folder's tokenized text, optimize and quantize every
ONNX file of the folder, bench through the tokenizer (and a decoder's KV cache). The
artifacts are folders (OUT/model/, OUT/model.opt/, OUT/model.int8/); each step records the
model.onnx inside, so provenance, gates and reports read files as for any other source."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from onnxkit.errors import UsageError
from onnxkit.operations.config import ConfigError
from onnxkit.operations.pipeline import FAILED, PASSED, SKIPPED, StepRecord, _artifact_suffix, _Run

MODEL_FILE = "model.onnx"


def is_hf_config(cfg: Any) -> bool:
    from onnxkit.frameworks.hf_scan import is_hf_folder

    src = cfg["source"]
    if src.get("framework") == "hf":
        return True
    return src.get("framework") is None and is_hf_folder(Path(str(src["path"])))


def run_class(cfg: Any) -> type:
    """The step runner for ``cfg``: this module's for a Hugging Face folder source."""
    if is_hf_config(cfg):
        if cfg["validate"]["data"] is not None:
            raise ConfigError(f"{cfg.path.name}: validate.data does not apply to a Hugging Face folder source; it is "
                              "validated on text its tokenizer encodes")
        if cfg["source"]["inputs"]:
            raise ConfigError(f"{cfg.path.name}: source.inputs does not apply to a Hugging Face folder source; its "
                              "tokenizer decides the inputs")
        _check_task(cfg)
        return HFRun
    if cfg["source"].get("task"):
        raise ConfigError(f"{cfg.path.name}: source.task applies to a Hugging Face folder source (config.json + safetensors)")
    return _Run


def _check_task(cfg: Any) -> None:
    """A task the steps cannot run is refused before the first step, not as a missing model.onnx."""
    from onnxkit.frameworks.hf_scan import HFFolder, read_json
    from onnxkit.operations.hf_config import check_pipeline_task

    task = cfg["source"].get("task")
    cfg_path = Path(str(cfg["source"]["path"])) / "config.json"
    if task is None and cfg_path.is_file():
        config = read_json(cfg_path, "config.json")
        if isinstance(config, dict):
            try:
                task = HFFolder(root=cfg_path.parent, model_dir=cfg_path.parent, config=config, weights="").infer_task()
            except UsageError:
                task = None  # export says why, with the folder in hand
    check_pipeline_task(task)


def _replace_folder(out: Path, write) -> None:
    """Write a fresh folder with ``write(new)`` and put it in place of ``out`` (this
    pipeline's artifact of an earlier run), so a failed step leaves the earlier one whole."""
    new = out.with_name(f".{out.name}.new-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(new, ignore_errors=True)
    try:
        write(new)
        if out.is_symlink() or (out.exists() and not out.is_dir()):
            raise UsageError(f"{out} is in the way of the pipeline's output folder and is not one; remove it")
        if out.exists():
            os.rename(out, old)
        os.rename(new, out)
    finally:
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


class HFRun(_Run):
    """The pipeline's steps on a Hugging Face folder."""

    def _folder(self, suffix: str = "") -> Path:
        return self.cfg.output_dir / f"{self.cfg['output']['name']}{suffix}"

    def export(self) -> None:
        from onnxkit.frameworks.base import LoadOptions
        from onnxkit.frameworks.hf_fw import load
        from onnxkit.operations.hf_export import export_hf_folder

        src, exp = self.cfg["source"], self.cfg["export"]
        out = self._folder()

        def run(rec: StepRecord) -> None:
            options = LoadOptions(framework="hf", trust=src["trust"], task=src.get("task"), opset=exp["opset"])
            self.source_model = load(str(src["path"]), options)
            res = export_hf_folder(str(src["path"]), out, options, validate=False, loaded=self.source_model)
            res.notes = [n for n in res.notes if "--no-validate" not in n]
            rec.result, rec.artifact = res, res.output
            rec.status = PASSED if res.passed else FAILED
            if not res.passed:
                rec.reason = "; ".join(res.checker_problems[:2]) or "export check failed"
            self.artifacts.append(("exported", out / MODEL_FILE, "validate export"))

        self._record("export", run)

    def validate(self, step: str, role: str, path: Path, preset: str, min_cosine: float | None = None) -> None:
        from onnxkit.foundation.compare import make_tolerance
        from onnxkit.operations.hf_validate import check_texts, validate_on_text
        from onnxkit.runtime.session import make_session

        v = self.cfg["validate"]

        def run(rec: StepRecord) -> None:
            session = make_session(path)
            same = preset == v["preset"]
            tolerance = make_tolerance(v["tol"] if same else None, v["rtol"] if same else None, preset=preset,
                                       min_cosine=min_cosine)
            res = validate_on_text(self.source_model, session.run, session.input_specs, check_texts([]), tolerance,
                                   reference_name=f"transformers {Path(str(self.cfg['source']['path'])).name}",
                                   candidate_name=f"{path.parent.name}/{path.name}")
            res.command = step
            rec.result, rec.artifact = res, str(path)
            rec.status = PASSED if res.passed else FAILED
            if not res.passed:
                rec.reason = f"out of {preset} tolerance: {', '.join(o.name for o in res.outputs if not o.passed)}"

        self._record(step, run)

    def optimize(self, model: Path) -> None:
        from onnxkit.operations.hf_folder_ops import optimize_folder

        o = self.cfg["optimize"]
        out = self._folder(".opt")
        trust = self.cfg["source"]["trust"]

        def run(rec: StepRecord) -> None:
            holder: dict[str, Any] = {}

            def write(dest: Path) -> None:
                # Validated against the source by the next step; the fixed passes (and
                # fusion from config.json) stand in for auto, which times one file.
                holder["res"] = optimize_folder(model.parent, dest, preset=o["preset"] or "default", level=o["level"],
                                                fp16=o["fp16"], validate=False, latency=False, trust=trust, probe=not trust)
            _replace_folder(out, write)
            res = holder["res"]
            res.output = str(out)
            res.notes = [n for n in res.notes if "--no-validate" not in n]
            if o["mode"] == "auto":
                res.notes.append("optimize mode auto times single files; on a folder the default passes and the "
                                 "transformer fusion config.json calls for are used")
            rec.result, rec.artifact = res, str(out / MODEL_FILE)
            rec.status = PASSED if res.passed else FAILED
            rec.reason = ", ".join(f"{f['file']}: {f.get('nodes_before')} -> {f.get('nodes_after')} nodes" for f in res.files)
            self.artifacts.append(("optimized", out / MODEL_FILE, "validate optimized"))

        self._record("optimize", run)

    def quantize(self, model: Path) -> None:
        from onnxkit.operations.hf_folder_ops import quantize_folder
        from onnxkit.operations.quantize.checks import skip_when_nothing_quantized

        q = self.cfg["quantize"]
        mode = "dynamic" if q["mode"] == "auto" else q["mode"]
        out = self._folder(f".{_artifact_suffix(mode)}")
        trust = self.cfg["source"]["trust"]

        def run(rec: StepRecord) -> None:
            holder: dict[str, Any] = {}

            def write(dest: Path) -> None:
                holder["res"] = quantize_folder(
                    model.parent, dest, mode=mode, calib_data=str(q["calib_data"]) if q["calib_data"] else None,
                    calib_random=q["calib_random"], max_error=self._quantize_budget(), seed=self.cfg["validate"]["seed"],
                    latency=False, trust=trust, probe=not trust, target_cpu=q["target_cpu"])
            _replace_folder(out, write)
            res = holder["res"]
            res.output = str(out)
            if q["mode"] == "auto":
                res.notes.append("quantize mode auto times single files; on a folder dynamic int8 is used")
            rec.result, rec.artifact = res, str(out / MODEL_FILE)
            rec.status = PASSED if res.passed else FAILED
            rec.reason = f"{sum(f.get('nodes_quantized', 0) for f in res.files)} node(s) quantized"
            if any(f.get("budget_met") is False for f in res.files):
                rec.reason += "; accuracy budget missed"
            self.artifacts.append(("quantized", out / MODEL_FILE, "validate quantized"))

        self._record("quantize", skip_when_nothing_quantized(run, SKIPPED))

    def bench(self) -> None:
        from onnxkit.operations.hf_folder_bench import bench_folders

        b = self.cfg["bench"]
        arts = [(role, p) for role, p, _ in self.artifacts if p.exists()]
        if not arts:
            self._skip("bench", "no artifact to time")
            return

        def run(rec: StepRecord) -> None:
            decoder = getattr(self.source_model, "task", "") == "text-generation"
            res = bench_folders([p.parent for _, p in arts], source=self.source_model if b["vs_source"] else None,
                                batch_sizes=[str(min(b["batch_sizes"]))] if decoder else [str(n) for n in b["batch_sizes"]],
                                iterations=b["iterations"], warmup=b["warmup"], threads=b["threads"] or (1 if decoder else None),
                                trust=self.cfg["source"]["trust"], names=[role for role, _ in arts])
            rec.result = res
            rec.status = PASSED if res.passed else FAILED
            final = [e for e in res.entries if e.name == arts[-1][0]]
            if final:
                e = final[-1]
                rec.reason = f"{arts[-1][0]} p50 {e.stats.p50_ms:.3f} ms" + (
                    f" ({e.phase} at context {e.context})" if decoder else f" at batch {e.batch_size}")

        self._record("bench", run)
