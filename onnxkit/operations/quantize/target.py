"""Which CPU a quantized model is made for: ``onnxkit quantize --target-cpu``.

ONNX Runtime's x86 int8 GEMMs multiply uint8 activations by int8 weights. Without VNNI (AVX2,
AVX-512 without VNNI) they use ``vpmaddubsw``, which adds two products into a 16-bit lane:
2 x 255 x 128 = 65280 overflows int16 and saturates. With 7-bit weights (reduce_range,
|w| <= 64) the worst pair is 2 x 255 x 64 = 32640, which fits. VNNI and AMX accumulate in 32
bits, and ARM64's NEON / dot-product kernels do not saturate, so full-range weights are safe
there and keep one more bit of precision.

A model is often quantized on one machine and served on another, so the weight range follows
the target the user names (default ``portable``: safe on any AVX2 x86-64 and on ARM64), never the
CPU quantize happens to run on. The target is recorded in the model's metadata so that ``run``
and ``bench`` can say when a model made for VNNI runs on a CPU without it.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxkit.errors import UsageError

TARGETS = ("portable", "avx2", "avx512", "avx512-vnni", "amx", "arm64", "native")
DEFAULT_TARGET = "portable"

META_TARGET = "onnxkit.target_cpu"
META_RESOLVED = "onnxkit.target_cpu_resolved"
# What the int8 weights really are ("reduced", "full" or "none"): --reduce-range flags may
# override the target, and the run-time warning must follow the weights, not the intent.
META_WEIGHTS = "onnxkit.int8_weights"
WEIGHT_VALUES = ("reduced", "full", "none")

# Modes whose int8 weights feed ONNX Runtime's u8 x s8 kernels.
_INT8_MODES = ("dynamic", "static")
# Quantized on a VNNI machine, a full-range model measured this on an AVX2 server (residual
# CNN, static int8, scripts/bench/findings.md).
_MEASURED = "cosine error 0.018 on a residual CNN"


@dataclass(frozen=True)
class TargetParams:
    """The quantization parameters one target CPU implies."""

    name: str
    reduce_range: bool                 # 7-bit int8 weights
    weight_type: str                   # signed int8: what ORT's fast CPU kernels take
    activation_type: str               # the default for static activations
    per_channel: bool
    auto_activations: tuple[str, ...]  # static activation types --mode auto may pick
    isa: str | None                    # the instruction set the target assumes (hostfacts' name)
    runs_on: str

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.name, "reduce_range": self.reduce_range, "weight_type": self.weight_type,
                "activation_type": self.activation_type, "per_channel": self.per_channel,
                "auto_activations": list(self.auto_activations), "isa": self.isa}


# Signed activations are 3.6x slower than unsigned on AVX2 without VNNI (static CNN, 1.4x vs
# 5.1x over fp32), so targets that may lack VNNI never get them from --mode auto.
_UNSIGNED_ONLY = ("uint8",)
_BOTH = ("uint8", "int8")
PARAMS: dict[str, TargetParams] = {
    "portable": TargetParams("portable", True, "int8", "uint8", True, _UNSIGNED_ONLY, None,
                             "any x86-64 CPU with AVX2 (with or without VNNI) and ARM64"),
    "avx2": TargetParams("avx2", True, "int8", "uint8", True, _UNSIGNED_ONLY, "AVX2", "x86-64 CPUs with AVX2"),
    "avx512": TargetParams("avx512", True, "int8", "uint8", True, _UNSIGNED_ONLY, "AVX-512",
                           "x86-64 CPUs with AVX-512 (Skylake-SP and later)"),
    "avx512-vnni": TargetParams("avx512-vnni", False, "int8", "uint8", True, _BOTH, "AVX512-VNNI",
                                "x86-64 CPUs with AVX512-VNNI (Cascade Lake and later, Zen 4 and later)"),
    "amx": TargetParams("amx", False, "int8", "uint8", True, _BOTH, "AMX-INT8",
                        "x86-64 CPUs with AMX-INT8 (Sapphire Rapids and later)"),
    "arm64": TargetParams("arm64", False, "int8", "uint8", True, _BOTH, "NEON", "ARM64 CPUs (NEON, dot product)"),
}


@dataclass(frozen=True)
class Target:
    given: str          # as the user wrote it (recorded in the model)
    params: TargetParams

    @property
    def name(self) -> str:
        return self.params.name

    @property
    def label(self) -> str:
        return self.given if self.given == self.name else f"{self.given} ({self.name})"

    def allows(self, settings: dict[str, Any]) -> bool:
        """Whether --mode auto may pick a candidate with these quantize settings."""
        return settings.get("activation_type", "uint8") in self.params.auto_activations

    def to_dict(self, *, reduce_range: bool | None = None, weights: str | None = None) -> dict[str, Any]:
        out = {"given": self.given, "resolved": self.name, "runs_on": self.params.runs_on,
               "default_reduce_range": self.params.reduce_range}
        if reduce_range is not None:
            out["reduce_range"] = reduce_range
        if weights is not None:
            out["int8_weights"] = weights
        return out


def native_target(facts: Any = None) -> str:
    """The best target this machine runs safely and fast; ``portable`` where its CPU cannot
    be read. A CPU with AVX-VNNI but no AVX-512 (Alder Lake) gets avx2: there is no closer
    target, and 7-bit weights are safe on it."""
    if facts is None:
        from onnxkit.foundation.hostfacts import host_facts

        facts = host_facts()
    if facts.is_arm:
        return "arm64"
    if not facts.is_x86 or not facts.flags_known or not facts.has("AVX2"):
        return "portable"
    if facts.has("AMX-INT8"):
        return "amx"
    if facts.has("AVX512-VNNI"):
        return "avx512-vnni"
    if facts.has("AVX-512") and facts.has("AVX512-BW"):
        return "avx512"
    return "avx2"


def resolve_target(given: str | None, facts: Any = None) -> Target:
    """``--target-cpu`` as a Target; exit 2 naming the choices for an unknown one."""
    raw = DEFAULT_TARGET if given is None else str(given)
    given = raw.strip().lower()
    if given not in TARGETS:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise UsageError(f"unknown --target-cpu {shown!r}; choose from {', '.join(TARGETS)}")
    name = native_target(facts) if given == "native" else given
    return Target(given, PARAMS[name])


def choose_reduce_range(target: Target, flag: bool | None, *, mode: str, weight_type: str) -> tuple[bool, str, list[str]]:
    """(reduce_range, what the int8 weights are, notes) for a quantize run. An explicit
    --reduce-range/--no-reduce-range wins, with a note where it contradicts the target."""
    int8 = mode in _INT8_MODES and weight_type == "int8"
    if flag is None:
        rr = int8 and target.params.reduce_range
    else:
        rr = bool(flag)
    weights = ("reduced" if rr else "full") if int8 else "none"
    notes: list[str] = []
    if not int8:
        if flag:
            notes.append(f"--reduce-range with --mode {mode} --weight-type {weight_type}: no signed int8 weights feed the "
                         "kernels that saturate; the flag only narrows the range")
        return rr, weights, notes
    if flag is not None and flag != target.params.reduce_range:
        if flag:
            notes.append(f"--reduce-range overrides --target-cpu {target.label}: 7-bit weights are safe there too, "
                         "one bit less precise than it needs")
        else:
            notes.append(f"--no-reduce-range overrides --target-cpu {target.label}: full-range int8 weights saturate "
                         "ONNX Runtime's int8 kernels on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI); "
                         "the model records this and `run`/`bench` warn on such CPUs")
    notes.append(range_note(target, rr))
    return rr, weights, notes


def range_note(target: Target, reduce_range: bool) -> str:
    if reduce_range:
        return (f"7-bit weights (reduce_range) for {target.label}: safe on AVX2 without VNNI "
                "(ONNX Runtime's int8 kernels there saturate with full-range weights)")
    if target.name == "arm64":
        return ("full-range int8 weights for arm64: ARM64's int8 kernels do not saturate; on an x86 CPU without VNNI "
                "this model loses accuracy (--target-cpu portable is safe on both)")
    return (f"full-range int8 weights for {target.label}: needs VNNI or AMX on x86; on an AVX2 CPU without VNNI "
            "this model loses accuracy (--target-cpu portable is safe there)")


def host_note(target: Target) -> str | None:
    """For --mode auto, which times on this machine: a note when this machine is not the target.
    Portable is judged against AVX2 without VNNI, the slowest int8 CPUs it must serve."""
    here = native_target()
    reference = "avx2" if target.name == "portable" else target.name
    if here == reference:
        return None
    return (f"variants timed on this CPU (native target: {here}), not on the target ({target.label}); the fastest "
            "here may not be the fastest there, and only variants the target allows were tried")


def stamp(model: Any, target: Target, *, weights: str) -> None:
    """Record the target in the model's metadata, replacing what an earlier run recorded."""
    values = {META_TARGET: target.given, META_WEIGHTS: weights}
    if target.given != target.name:
        values[META_RESOLVED] = target.name
    keep = [p for p in model.metadata_props if p.key not in (META_TARGET, META_RESOLVED, META_WEIGHTS)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


# ---------------------------------------------------------------- run time

def _varint(f: io.BufferedReader) -> int | None:
    shift = result = 0
    while shift < 64:
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    return None


_METADATA_FIELD = 14         # ModelProto.metadata_props
_MAX_ENTRY = 1 << 16         # a target entry is a few bytes; larger ones are someone else's
_MAX_FIELDS = 100_000


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The model's metadata_props, read from the file's top-level fields without parsing the
    graph (the weights are seeked over, so this costs the same for a 2 GB model). Anything
    unreadable yields {}: the caller has already checked the file, this only informs."""
    from onnx import StringStringEntryProto

    out: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            for _ in range(_MAX_FIELDS):
                tag = _varint(f)
                if tag is None:
                    break
                field_no, wire = tag >> 3, tag & 7
                if wire == 0:
                    if _varint(f) is None:
                        break
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    size = _varint(f)
                    if size is None:
                        break
                    if field_no == _METADATA_FIELD and size <= _MAX_ENTRY:
                        entry = StringStringEntryProto()
                        entry.ParseFromString(f.read(size))
                        out[entry.key] = entry.value
                    else:
                        f.seek(size, os.SEEK_CUR)
                else:
                    break  # groups: not in an ONNX file
    except Exception:  # noqa: BLE001 - a warning source must never fail the command
        return {}
    return out


def host_warnings(metadata: dict[str, str], facts: Any = None) -> list[str]:
    """Notes for running a model with this recorded target on this machine (empty when it is
    fine, or when the model records no target onnxkit knows)."""
    given = metadata.get(META_TARGET)
    if given not in TARGETS:
        return []
    name = metadata.get(META_RESOLVED) if given == "native" else given
    if name not in PARAMS:
        return []
    if facts is None:
        from onnxkit.foundation.hostfacts import host_facts

        facts = host_facts()
    target = Target(given, PARAMS[name])
    weights = metadata.get(META_WEIGHTS)
    full = weights == "full" if weights in WEIGHT_VALUES else not target.params.reduce_range
    cpu = facts.model_name
    if full and facts.x86_int8_dot is False:
        return [f"model quantized for {target.label} with full-range int8 weights, and this CPU ({cpu}) has no VNNI/AMX: "
                f"ONNX Runtime's int8 kernels saturate here and lose accuracy (measured: {_MEASURED}); "
                "quantize the float model again with --target-cpu portable for this CPU"]
    isa = target.params.isa
    if target.name in ("avx512", "avx512-vnni", "amx") and facts.flags_known and isa and not facts.has(isa):
        return [f"model quantized for {target.label}, and this CPU ({cpu}) has no {isa}: its answers are as accurate, "
                "but speed measured on the target does not hold here"]
    return []


def notes_for_model(model: str | os.PathLike[str]) -> list[str]:
    """``run`` and ``bench``: what to tell the user about running this model file here."""
    return host_warnings(read_metadata(Path(model)))


def notes_for_models(models: list[str | os.PathLike[str]]) -> list[str]:
    out: list[str] = []
    for m in models:
        out.extend(f"{Path(m).name}: {n}" if len(models) > 1 else n for n in notes_for_model(m))
    return out
