"""Execution providers: what the installed ONNX Runtime offers, what to install for the rest,
``--provider-option`` parsing, GPU defaults, and the check that a requested provider really
took the graph (ORT silently drops to CPU when e.g. the CUDA libraries are missing)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from onnxkit.errors import EnvironmentProblem, UsageError
from onnxkit.results import Result, Table
from onnxkit.runtime.session import PROVIDER_ALIASES, available_providers, ort, resolve_provider

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# The onnxruntime distributions on PyPI; each ships one build. Two of them installed side by
# side overwrite each other's files, which is a classic cause of "CUDA provider vanished".
ORT_PACKAGES = (
    "onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
    "onnxruntime-qnn", "onnxruntime-rocm", "onnxruntime-migraphx", "onnxruntime-silicon",
    "onnxruntime-training", "ort-nightly", "ort-nightly-gpu",
)

# provider -> how to get it. Versions are those of current onnxruntime releases (1.2x).
INSTALL_HINTS: dict[str, str] = {
    CUDA: "pip install onnxruntime-gpu (replaces onnxruntime; uninstall that first); needs an NVIDIA driver, "
          "CUDA 12.x and cuDNN 9.x - `pip install 'onnxruntime-gpu[cuda,cudnn]'` brings both as wheels",
    TENSORRT: "onnxruntime-gpu (as for CUDA) plus TensorRT 10.x libraries (`pip install tensorrt`, or NVIDIA's "
              "TensorRT tarball on LD_LIBRARY_PATH); onnxkit keeps CUDA as its fallback for nodes TensorRT refuses",
    "OpenVINOExecutionProvider": "pip install 'onnxkit[openvino]': `--provider openvino` then runs the OpenVINO "
                                 "runtime itself (onnxruntime-openvino replaces onnxruntime and cannot sit beside it)",
    "DmlExecutionProvider": "pip install onnxruntime-directml (Windows 10+, any DirectX 12 GPU; replaces onnxruntime)",
    "CoreMLExecutionProvider": "part of the standard onnxruntime wheel on macOS (Apple Silicon or Intel); "
                               "not available on Linux/Windows",
    "ROCMExecutionProvider": "onnxruntime-rocm from AMD's ROCm wheel index (ROCm 6.x); recent ONNX Runtime "
                             "releases move AMD GPUs to MIGraphX",
    "MIGraphXExecutionProvider": "onnxruntime-migraphx from AMD's ROCm wheel index (ROCm 6.x, AMD GPUs)",
    "QNNExecutionProvider": "pip install onnxruntime-qnn (Qualcomm NPUs, Windows on ARM / Android)",
    "XnnpackExecutionProvider": "build ONNX Runtime from source with --use_xnnpack (mobile/ARM CPUs)",
    "WebGpuExecutionProvider": "build ONNX Runtime from source with --use_webgpu",
}

# Sensible defaults per provider; the user's --provider-option values win.
DEFAULT_OPTIONS: dict[str, dict[str, str]] = {
    CUDA: {"device_id": "0"},
    # Engine builds take minutes; cache them next to other onnxkit caches so the second run
    # of the same model starts in seconds.
    TENSORRT: {"device_id": "0", "trt_engine_cache_enable": "True"},
}


def _cache_dir() -> Path:
    base = os.environ.get("ONNXKIT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "onnxkit")
    return Path(base)


def installed_ort_packages() -> dict[str, str]:
    """Installed onnxruntime distributions -> version (from package metadata, nothing imported)."""
    from importlib import metadata

    found: dict[str, str] = {}
    for name in ORT_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def parse_provider_options(values: list[str] | None, providers: list[str]) -> dict[str, dict[str, str]]:
    """``--provider-option`` values -> {provider: {key: value}}.

    ``KEY=VALUE`` applies to the first requested provider other than CPU (the one the user
    cares about); ``PROVIDER:KEY=VALUE`` (e.g. ``cuda:device_id=1``) names it explicitly."""
    out: dict[str, dict[str, str]] = {}
    target_default = next((p for p in providers if p != CPU), providers[0] if providers else CPU)
    for raw in values or []:
        text = raw.strip()
        prov = target_default
        head, sep, rest = text.partition(":")
        if sep and "=" not in head:
            prov = resolve_provider(head)
            text = rest
        key, eq, value = text.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"malformed --provider-option {raw!r}; expected KEY=VALUE or PROVIDER:KEY=VALUE (e.g. cuda:device_id=1)")
        if prov not in providers:
            raise UsageError(f"--provider-option {raw!r} is for {prov}, which is not among the providers used: {', '.join(providers)}")
        _check_option_key(prov, key.strip(), raw)
        out.setdefault(prov, {})[key.strip()] = value.strip()
    return out


# Keys ONNX Runtime's CUDA provider reads (1.17-1.22); TensorRT reads trt_* and a few shared ones.
_CUDA_KEYS = frozenset({
    "device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search", "do_copy_in_default_stream",
    "cudnn_conv_use_max_workspace", "cudnn_conv1d_pad_to_nc1d", "enable_cuda_graph", "enable_skip_layer_norm_strict_mode",
    "gpu_external_alloc", "gpu_external_free", "gpu_external_empty_cache", "has_user_compute_stream", "user_compute_stream",
    "tunable_op_enable", "tunable_op_tuning_enable", "tunable_op_max_tuning_duration_ms", "prefer_nhwc",
    "use_ep_level_unified_stream", "use_tf32", "sdpa_kernel", "fuse_conv_bias", "default_memory_arena_cfg",
})
_TRT_SHARED_KEYS = frozenset({"device_id", "has_user_compute_stream", "user_compute_stream"})


def _check_option_key(prov: str, key: str, raw: str) -> None:
    """ONNX Runtime ignores keys it does not know (the CPU provider ignores every key): a
    misspelt option would look applied and change nothing."""
    if prov == CPU:
        raise UsageError(f"--provider-option {raw!r}: {CPU} takes no provider options (ONNX Runtime would ignore "
                         f"{key!r}); CPU thread counts are session settings, not provider options")
    if prov == CUDA and key not in _CUDA_KEYS:
        log.warning("--provider-option %s: %r is not a %s option onnxkit knows (ONNX Runtime may ignore it); known: %s",
                    raw, key, CUDA, ", ".join(sorted(_CUDA_KEYS)))
    if prov == TENSORRT and not key.startswith("trt_") and key not in _TRT_SHARED_KEYS:
        log.warning("--provider-option %s: %r is not a %s option (they start with trt_); ONNX Runtime may ignore it",
                    raw, key, TENSORRT)


def provider_options_for(providers: list[str], user: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """Defaults merged with the user's options, for the providers in use."""
    merged: dict[str, dict[str, str]] = {}
    for p in providers:
        opts = dict(DEFAULT_OPTIONS.get(p, {}))
        if p == TENSORRT and "trt_engine_cache_path" not in (user or {}).get(p, {}):
            cache = _cache_dir() / "tensorrt"
            try:
                cache.mkdir(parents=True, exist_ok=True)
                opts["trt_engine_cache_path"] = str(cache)
            except OSError:  # no writable cache: TensorRT still runs, it only rebuilds engines
                opts.pop("trt_engine_cache_enable", None)
        opts.update((user or {}).get(p, {}))
        if opts:
            merged[p] = opts
    # TensorRT and CUDA share a device: one --provider-option device_id should move both.
    if TENSORRT in merged and CUDA in merged and "device_id" in (user or {}).get(TENSORRT, {}) and "device_id" not in (user or {}).get(CUDA, {}):
        merged[CUDA]["device_id"] = merged[TENSORRT]["device_id"]
    return merged


def plan_providers(names: list[str] | None, *, fallback: bool = False) -> list[str]:
    """select_providers plus the GPU conventions: TensorRT gets CUDA behind it (nodes TensorRT
    cannot take then run on the GPU rather than on the CPU)."""
    from onnxkit.runtime.session import select_providers

    chosen = select_providers(names, fallback=fallback)
    if TENSORRT in chosen and CUDA not in chosen and CUDA in available_providers():
        chosen.insert(chosen.index(TENSORRT) + 1, CUDA)
    return chosen


def check_active(requested: list[str], active: list[str], *, fallback: bool) -> list[str]:
    """ORT accepts a provider whose libraries then fail to load and quietly runs on CPU.
    Refuse that (exit 3) unless ``fallback``; returns the warnings to show."""
    lost = [p for p in requested if p != CPU and p not in active]
    if not lost:
        return []
    msg = f"{', '.join(lost)} could not be initialised (its libraries failed to load); the session runs on {', '.join(active)}"
    if not fallback:
        raise EnvironmentProblem(msg, hint=INSTALL_HINTS.get(lost[0], "check the provider's libraries") + "; or pass --fallback")
    log.warning("%s", msg)
    return [msg]


# ---------------------------------------------------------------- `onnxkit providers`

@dataclass
class ProviderStatus:
    name: str
    alias: str | None
    available: bool
    usable: bool | None = None       # None: not probed (CPU-only check, or --no-probe)
    problem: str | None = None
    install: str | None = None


@dataclass
class ProvidersResult(Result):
    command: str = "providers"
    onnxruntime_version: str = ""
    device: str = ""
    packages: dict[str, str] = field(default_factory=dict)
    providers: list[ProviderStatus] = field(default_factory=list)

    def tables(self) -> list[Table]:
        pkgs = ", ".join(f"{k} {v}" for k, v in self.packages.items()) or "none found by package metadata"
        overview = Table("ONNX Runtime", ["property", "value"], [
            ["version", self.onnxruntime_version], ["device", self.device], ["packages", pkgs],
        ])
        rows = []
        for p in self.providers:
            state = ("yes" if p.usable is not False else "no: " + (p.problem or "failed to initialise")) if p.available else "no"
            rows.append([p.name, p.alias or "-", state, "-" if p.available and p.usable is not False else (p.install or "-")])
        return [overview, Table("Execution providers", ["provider", "--provider", "available", "to get it"], rows)]


def _alias_of(provider: str) -> str | None:
    return next((a for a, full in PROVIDER_ALIASES.items() if full == provider), None)


def _probe(provider: str) -> tuple[bool, str | None]:
    """Create a one-node session on ``provider``: the list ORT reports does not say whether
    the provider's libraries (CUDA, cuDNN, TensorRT) actually load."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    rt = ort()
    try:
        sess = rt.InferenceSession(model.SerializeToString(), providers=[provider, CPU])
    except Exception as exc:
        return False, (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if provider not in sess.get_providers():
        return False, "its libraries failed to load (ORT fell back to CPU)"
    return True, None


def providers_report(*, probe: bool = True) -> ProvidersResult:
    """What `onnxkit providers` shows."""
    rt = ort()
    have = list(rt.get_available_providers())
    packages = installed_ort_packages()
    result = ProvidersResult(onnxruntime_version=rt.__version__, device=rt.get_device(), packages=packages)
    known = list(dict.fromkeys(have + list(INSTALL_HINTS)))
    for name in known:
        status = ProviderStatus(name, _alias_of(name), name in have, install=INSTALL_HINTS.get(name))
        if status.available and probe and name != CPU:
            status.usable, status.problem = _probe(name)
        result.providers.append(status)
    if len(packages) > 1:
        result.notes.append(
            f"several onnxruntime packages are installed ({', '.join(packages)}); they overwrite each other's files. "
            "Keep one: pip uninstall " + " ".join(packages) + " && pip install <the one you need>",
        )
    if not packages:
        result.notes.append("onnxruntime is importable but no onnxruntime package metadata was found (a source build?)")
    return result


__all__ = [
    "INSTALL_HINTS", "ORT_PACKAGES", "ProvidersResult", "ProviderStatus", "check_active", "installed_ort_packages",
    "parse_provider_options", "plan_providers", "provider_options_for", "providers_report",
]
