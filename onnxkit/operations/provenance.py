"""Where a report's numbers came from: package versions, opsets, file digests, the machine.

Framework versions are read from installed distribution metadata, never by importing
the framework: a provenance block must not cost seconds of TensorFlow start-up nor fail
because a framework is broken.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# distribution name -> label shown in reports. Several names for one framework (the
# tensorflow-cpu wheel, for instance) collapse to whichever is installed.
DISTRIBUTIONS: list[tuple[str, str]] = [
    ("onnx", "onnx"),
    ("onnxruntime", "onnxruntime"),
    ("onnxruntime-gpu", "onnxruntime-gpu"),
    ("onnxoptimizer", "onnxoptimizer"),
    ("onnxscript", "onnxscript"),
    ("onnxconverter-common", "onnxconverter-common"),
    ("numpy", "numpy"),
    ("torch", "torch"),
    ("tensorflow", "tensorflow"),
    ("tensorflow-cpu", "tensorflow"),
    ("keras", "keras"),
    ("tf2onnx", "tf2onnx"),
    ("scikit-learn", "scikit-learn"),
    ("skl2onnx", "skl2onnx"),
    ("onnxmltools", "onnxmltools"),
    ("xgboost", "xgboost"),
    ("lightgbm", "lightgbm"),
    ("transformers", "transformers"),
]


@dataclass
class Artifact:
    role: str           # "source", "exported", "optimized", "quantized"
    path: str
    size: int
    sha256: str
    opsets: dict[str, int] = field(default_factory=dict)


@dataclass
class Provenance:
    onnxkit: str = ""
    python: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    ort_providers: list[str] = field(default_factory=list)
    onnx_max_opset: int | None = None
    machine: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    # The bench's intra-op thread count (timed_at, chosen_by), the fastest count measured per
    # model (recommended), the spin policy and load around the timing; None when nothing was timed.
    threads: dict[str, Any] | None = None

    def rows(self) -> list[list[str]]:
        """Flat (property, value) rows for tables and reports."""
        rows = [["onnxkit", self.onnxkit], ["python", self.python]]
        rows += [[k, v] for k, v in self.packages.items()]
        rows.append(["onnx max opset", str(self.onnx_max_opset)])
        rows.append(["ORT providers", ", ".join(self.ort_providers) or "-"])
        rows += [[f"machine {k}", str(v)] for k, v in self.machine.items()]
        if self.threads:
            t = self.threads
            rows.append(["timed at threads", f"{t.get('timed_at') or 'ONNX Runtime default'} ({t.get('chosen_by')})"])
            if t.get("recommended"):
                rows.append(["recommended intra_op_num_threads",
                             ", ".join(f"{k} {v}" for k, v in t["recommended"].items())])
            if t.get("load_before") and t.get("load_after"):
                rows.append(["load average before/after bench", f"{t['load_before'][0]:g} / {t['load_after'][0]:g}"])
        return rows


def package_versions() -> dict[str, str]:
    from importlib import metadata

    found: dict[str, str] = {}
    for dist, label in DISTRIBUTIONS:
        if label in found:
            continue
        try:
            found[label] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def _memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    from onnxkit.foundation.hostfacts import host_facts
    from onnxkit.results import fmt_bytes

    host = host_facts()
    info: dict[str, Any] = {
        "cpu": host.model_name,
        "logical cores": host.logical_cores,
        "usable cores": host.usable_cores,
        "physical cores": host.physical_cores,
        "isa": ", ".join(host.isa) or "unknown",
    }
    mem = _memory_bytes()
    info["memory"] = fmt_bytes(mem) if mem else "unknown"
    info["os"] = platform.platform()
    info["arch"] = platform.machine()
    return info


def onnx_opsets(path: str | Path) -> dict[str, int]:
    """Opset per domain of an ONNX file, read without its external data."""
    from onnxkit.foundation.onnx_io import load_onnx

    try:
        model = load_onnx(path, load_external=False, allow_custom_domains=True).model
    except Exception:  # a report must still be written for an artifact that cannot be read
        return {}
    return {(i.domain or "ai.onnx"): int(i.version) for i in model.opset_import}


def artifact(role: str, path: str | Path, *, digest: str | None = None) -> Artifact:
    from onnxkit.foundation.files import sha256_file

    p = Path(path)
    size = p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
    if digest is None:
        digest = sha256_file(p) if p.is_file() else ""
    opsets = onnx_opsets(p) if p.suffix == ".onnx" and p.is_file() else {}
    return Artifact(role=role, path=str(p), size=size, sha256=digest, opsets=opsets)


# Files a pipeline reads besides its source: (role, config section, key, the section
# whose "enabled" says whether the file is read at all).
INPUT_FILES: tuple[tuple[str, str, str, str | None], ...] = (
    ("weights", "source", "weights", None),
    ("sample", "source", "sample", None),
    ("validation data", "validate", "data", "validate"),
    ("calibration data", "quantize", "calib_data", "quantize"),
)


def input_artifacts(cfg: Any) -> list[Artifact]:
    """The files a pipeline run read besides its source (a factory's weights, data), so a
    report says what its numbers came from; a factory exported without weights says so."""
    arts: list[Artifact] = []
    for role, section, key, gate in INPUT_FILES:
        value = cfg[section].get(key)
        if value is None or (gate is not None and not cfg[gate].get("enabled", True)):
            continue
        if Path(value).exists():
            arts.append(artifact(role, value))
    if cfg["export"].get("random_weights") and cfg["source"].get("weights") is None:
        arts.append(Artifact(role="weights", path="none: exported as the factory builds it (random_weights = true)",
                             size=0, sha256=""))
    return arts


def collect(artifacts: list[Artifact] | None = None, *, threads: dict[str, Any] | None = None) -> Provenance:
    """The provenance of this run; imports onnx and onnxruntime (both core dependencies)."""
    from onnxkit import __version__

    prov = Provenance(
        onnxkit=__version__,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        packages=package_versions(),
        machine=machine_info(),
        artifacts=list(artifacts or []),
        threads=threads,
    )
    try:
        import onnx.defs

        prov.onnx_max_opset = int(onnx.defs.onnx_opset_version())
    except Exception:  # provenance is descriptive; never fail a run for it
        pass
    try:
        from onnxkit.runtime.session import available_providers

        prov.ort_providers = list(available_providers())
    except Exception:
        pass
    return prov


def bench_threads(bench: Any) -> dict[str, Any] | None:
    """A bench result's thread count and how it was chosen, the fastest count per model, the
    spin policy and the load around the timing; None when nothing was timed."""
    if bench is None or not hasattr(bench, "threads_from"):
        return None
    return {"timed_at": bench.threads, "chosen_by": bench.threads_from, "recommended": dict(bench.recommended_threads),
            "spin_policy": bench.spin_policy, "load_before": bench.load_before, "load_after": bench.load_after}
