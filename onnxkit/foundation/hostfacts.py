"""What this machine's CPU is and can do, read once and shared.

quantize (reduce_range on AVX2 without VNNI), provenance (the machine a report was made on)
and the bench suite all ask the same questions; answering them in one place keeps them from
disagreeing about one machine. /proc/cpuinfo is read here and nowhere else in onnxkit.
No framework is imported.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")

# Kernel flag names -> the names people know. x86 "flags" lines, ARM "Features" lines.
_X86_ISA = {
    "sse4_2": "SSE4.2", "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "f16c": "F16C",
    "avx512f": "AVX-512", "avx512bw": "AVX512-BW", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16", "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
}
_ARM_ISA = {
    "asimd": "NEON", "asimddp": "DOTPROD", "i8mm": "I8MM", "bf16": "BF16", "asimdhp": "FP16",
    "sve": "SVE", "sve2": "SVE2",
}
# int8 dot-product instructions ONNX Runtime's x86 kernels use instead of 16-bit partial sums.
_X86_INT8_DOT = {"AVX512-VNNI", "AVX-VNNI", "AMX-INT8"}
_ARM_ARCHES = ("aarch64", "arm64", "armv8", "armv9")

# "CPU implementer" / "CPU part" of common 64-bit ARM cores, for a readable model name where
# the kernel prints none (Graviton, Ampere, Raspberry Pi).
_ARM_VENDORS = {"0x41": "ARM", "0x61": "Apple", "0xc0": "Ampere", "0x48": "HiSilicon", "0x51": "Qualcomm"}
_ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1", ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2", ("0xc0", "0xac3"): "Ampere-1",
}


@dataclass(frozen=True)
class CpuInfo:
    """What /proc/cpuinfo says (pure data: parsed from text, testable with any machine's)."""

    model_name: str | None = None
    flags: frozenset[str] = frozenset()
    isa: tuple[str, ...] = ()
    processors: int = 0
    physical_cores: int | None = None  # distinct (package, core) pairs; None where not listed


@dataclass(frozen=True)
class HostFacts:
    arch: str
    model_name: str
    logical_cores: int | None
    physical_cores: int | None
    usable_cores: int | None  # what this process's affinity mask allows (taskset, cgroups cpusets)
    isa: tuple[str, ...] = ()
    flags_known: bool = False  # False where no flag list could be read (not Linux)
    flags: frozenset[str] = field(default=frozenset(), repr=False)

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "i386", "x86")

    @property
    def is_arm(self) -> bool:
        return self.arch.lower().startswith(_ARM_ARCHES)

    def has(self, name: str) -> bool:
        return name in self.isa

    @property
    def x86_int8_dot(self) -> bool | None:
        """VNNI/AMX int8 dot products on an AVX2 x86 CPU; None where the question does not apply
        (not x86, flags unknown, or no AVX2)."""
        if not self.is_x86 or not self.flags_known or "AVX2" not in self.isa:
            return None
        return bool(_X86_INT8_DOT & set(self.isa))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.model_name, "arch": self.arch, "logical cores": self.logical_cores,
            "physical cores": self.physical_cores, "usable cores": self.usable_cores,
            "isa": list(self.isa) if self.flags_known or self.isa else None,
        }


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of /proc/cpuinfo (x86 or ARM)."""
    model = vendor = part = None
    flags: set[str] = set()
    processors = 0
    cores: set[tuple[str, str]] = set()
    package = None
    for raw in text.splitlines():
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
            package = None
        elif key in ("model name", "cpu model", "hardware") and value and model is None:
            model = value
        elif key in ("flags", "features"):
            flags.update(value.split())
        elif key == "cpu implementer" and vendor is None:
            vendor = value.lower()
        elif key == "cpu part" and part is None:
            part = value.lower()
        elif key == "physical id":
            package = value
        elif key == "core id":
            cores.add((package or "0", value))
    if model is None and vendor is not None:
        model = " ".join(x for x in (_ARM_VENDORS.get(vendor, f"implementer {vendor}"),
                                     _ARM_PARTS.get((vendor, part or ""), f"part {part}" if part else None)) if x)
    isa = tuple(name for flag, name in {**_X86_ISA, **_ARM_ISA}.items() if flag in flags)
    return CpuInfo(model, frozenset(flags), isa, processors, len(cores) or None)


def _sysfs_physical_cores() -> int | None:
    # ARM kernels list no core ids in /proc/cpuinfo; the topology folder has the siblings.
    groups = set()
    for topo in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology"):
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                groups.add((topo / name).read_text().strip())
                break
            except OSError:
                continue
    return len(groups) or None


def _usable_cores() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _darwin_brand() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@functools.lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    """This machine's facts, read once per process."""
    arch = platform.machine() or "unknown"
    try:
        info: CpuInfo | None = parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        info = None
    physical = info.physical_cores if info else None
    if physical is None and sys.platform.startswith("linux"):
        physical = _sysfs_physical_cores()
    if physical is None:
        try:
            import psutil

            physical = psutil.cpu_count(logical=False)
        except ImportError:
            pass
    model = info.model_name if info else None
    if model is None and sys.platform == "darwin":
        model = _darwin_brand()
    isa = info.isa if info else ()
    if arch.lower().startswith(_ARM_ARCHES) and "NEON" not in isa:
        isa = ("NEON", *isa)  # mandatory in AArch64, whatever the flag list says
    return HostFacts(
        arch=arch, model_name=model or platform.processor() or arch,
        logical_cores=os.cpu_count(), physical_cores=physical, usable_cores=_usable_cores(),
        isa=isa, flags_known=bool(info and info.flags), flags=info.flags if info else frozenset(),
    )
