"""Deployment targets served by the installed ONNX Runtime wheel: ``cpu`` (the reference
every other target is compared with), ``cuda`` and ``tensorrt``.

CUDA and TensorRT take the same provider options as ``run`` (device id, TensorRT's engine
cache and fp16 switch) through :func:`onnxkit.runtime.providers.provider_options_for`."""

from __future__ import annotations

from onnxkit.runtime.targets_common import first_line, ort_unsupported, reply, run_ort_session

CPU = "CPUExecutionProvider"
GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# Short forms of providers.INSTALL_HINTS: `onnxkit providers` gives the long ones.
_NEEDS = {"cuda": "needs onnxruntime-gpu (it replaces onnxruntime) and an NVIDIA GPU with its driver",
          "tensorrt": "needs onnxruntime-gpu, TensorRT 10.x libraries and an NVIDIA GPU"}


def availability(target: str) -> str | None:
    """None when ``target`` can run here, else why not (one line)."""
    if target == "cpu":
        return None
    from onnxkit.runtime.session import available_providers

    provider = GPU_PROVIDERS[target]
    have = available_providers()
    if provider not in have:
        return f"{provider} is not in this onnxruntime build (it has {', '.join(have)}); {_NEEDS[target]}"
    return None


def session(model_path: str, providers: list[str], options: dict):
    """A plain ONNX Runtime session: its errors keep ORT's own words (the op and node names)."""
    import onnxruntime as ort

    from onnxkit.runtime.providers import check_active, provider_options_for

    merged = provider_options_for(providers, options.get("provider_options") or {})
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if options.get("custom_op_library"):
        so.register_custom_ops_library(options["custom_op_library"])
    sess = ort.InferenceSession(model_path, sess_options=so, providers=providers,
                                provider_options=[merged.get(p, {}) for p in providers])
    check_active(providers, list(sess.get_providers()), fallback=False)
    return sess


def run(target: str, model_path: str, feeds: list[dict], precision: str | None, options: dict) -> dict:
    """Run ``model_path`` on ``target`` over ``feeds``; see targets_common for the reply."""
    import onnxruntime as ort

    notes: list[str] = []
    providers = [CPU]
    if target != "cpu":
        providers = [GPU_PROVIDERS[target]]
        if target == "tensorrt":
            providers.append(GPU_PROVIDERS["cuda"])
        providers.append(CPU)
    opts = dict(options)
    if target == "tensorrt" and precision == "f16":
        user = {k: dict(v) for k, v in (opts.get("provider_options") or {}).items()}
        user.setdefault(GPU_PROVIDERS["tensorrt"], {})["trt_fp16_enable"] = "True"
        opts["provider_options"] = user
        used = "f16"
    else:
        used = "f32"
        if precision not in (None, "f32"):
            notes.append(f"--precision {precision} ignored: ONNX Runtime {target} runs the graph's own types")
    ort.set_default_logger_severity(3)
    try:
        sess = session(model_path, providers, opts)
    except Exception as exc:  # the target's answer, not an onnxkit error
        msg = first_line(exc)
        return reply(stage="load", error=msg, unsupported=ort_unsupported(str(exc)), notes=notes)
    try:
        outs, latency = run_ort_session(sess, feeds)
    except Exception as exc:
        return reply(stage="run", error=first_line(exc), notes=notes)
    return reply(outputs=outs, precision=used, latency_ms=latency, notes=notes,
                 extra={"providers": list(sess.get_providers())})
