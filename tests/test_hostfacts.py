"""One reader of the host's CPU facts: the same answers for quantize, provenance and the bench suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from onnxkit.foundation import hostfacts
from onnxkit.foundation.hostfacts import HostFacts, parse_cpuinfo

ROOT = Path(__file__).resolve().parents[1]

# Two logical CPUs of each machine, trimmed to the lines that matter (real kernels print more).
AMD_ZEN2_AVX2 = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7R32
physical id\t: 0
siblings\t: 4
core id\t\t: 0
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7R32
physical id\t: 0
siblings\t: 4
core id\t\t: 0
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni

processor\t: 2
model name\t: AMD EPYC 7R32
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni

processor\t: 3
model name\t: AMD EPYC 7R32
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni
"""

INTEL_ICX_VNNI = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_vbmi2

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
physical id\t: 1
core id\t\t: 0
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_vbmi2
"""

# A Graviton 2: no model name, no core ids; the Features line instead of flags.
ARM64_NEOVERSE = """\
processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
"""


def _facts(text: str, arch: str) -> HostFacts:
    info = parse_cpuinfo(text)
    return HostFacts(arch=arch, model_name=info.model_name or arch, logical_cores=info.processors,
                     physical_cores=info.physical_cores, usable_cores=info.processors, isa=info.isa,
                     flags_known=bool(info.flags), flags=info.flags)


def test_amd_avx2_without_vnni():
    info = parse_cpuinfo(AMD_ZEN2_AVX2)
    assert info.model_name == "AMD EPYC 7R32"
    assert info.processors == 4 and info.physical_cores == 2  # SMT: two threads per core
    assert "AVX2" in info.isa and "FMA" in info.isa
    assert not {"AVX-512", "AVX512-VNNI", "AVX-VNNI", "AMX-INT8"} & set(info.isa)
    # quantize's reduce_range default turns on exactly here
    assert _facts(AMD_ZEN2_AVX2, "x86_64").x86_int8_dot is False


def test_intel_avx512_vnni():
    info = parse_cpuinfo(INTEL_ICX_VNNI)
    assert info.model_name.startswith("Intel(R) Xeon(R) Platinum 8375C")
    assert info.physical_cores == 2  # two sockets, core 0 on each: not one core
    assert {"AVX2", "AVX-512", "AVX512-VNNI"} <= set(info.isa)
    assert "AVX-VNNI" not in info.isa  # "avx512_vnni" must not read as the separate AVX-VNNI
    assert _facts(INTEL_ICX_VNNI, "x86_64").x86_int8_dot is True


def test_arm64_neon_and_dotprod():
    info = parse_cpuinfo(ARM64_NEOVERSE)
    assert info.model_name == "ARM Neoverse-N1"
    assert info.physical_cores is None  # not listed: host_facts asks sysfs/psutil instead
    assert {"NEON", "DOTPROD", "FP16"} <= set(info.isa)
    assert not {"AVX2", "I8MM", "SVE"} & set(info.isa)
    facts = _facts(ARM64_NEOVERSE, "aarch64")
    assert facts.is_arm and not facts.is_x86
    assert facts.x86_int8_dot is None  # the x86 question does not apply


def test_empty_or_garbled_text_parses_to_nothing():
    info = parse_cpuinfo("not : a\nreal\n\x00cpuinfo")
    assert info.model_name is None and info.isa == () and info.physical_cores is None


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    def use(text: str, arch: str = "x86_64") -> HostFacts:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(hostfacts, "CPUINFO", path)
        monkeypatch.setattr(hostfacts.platform, "machine", lambda: arch)
        hostfacts.host_facts.cache_clear()
        return hostfacts.host_facts()

    yield use
    hostfacts.host_facts.cache_clear()


def test_quantize_provenance_and_suite_agree(fake_host):
    from onnxkit.operations.provenance import machine_info
    from onnxkit.operations.quantize import cpu_has_vnni, default_reduce_range

    facts = fake_host(AMD_ZEN2_AVX2)
    assert facts.usable_cores >= 1 and facts.logical_cores >= 1
    assert cpu_has_vnni() is False and default_reduce_range() is True
    info = machine_info()
    assert info["cpu"] == "AMD EPYC 7R32" and info["physical cores"] == 2 and "AVX2" in info["isa"]

    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    try:
        import suite
    finally:
        sys.path.remove(str(ROOT / "scripts" / "bench"))
    bench_machine = suite.machine()
    assert bench_machine["cpu"] == "AMD EPYC 7R32" and bench_machine["avx2"] and not bench_machine["vnni"]

    fake_host(INTEL_ICX_VNNI)
    assert suite.machine()["vnni"] is True
    assert cpu_has_vnni() is True and default_reduce_range() is False
    assert machine_info()["cpu"].startswith("Intel(R) Xeon(R)")

    facts = fake_host(ARM64_NEOVERSE, "aarch64")
    assert cpu_has_vnni() is None and default_reduce_range() is False
    assert facts.has("NEON") and facts.model_name == "ARM Neoverse-N1"


def test_no_cpuinfo_falls_back_to_platform(fake_host, monkeypatch, tmp_path):
    monkeypatch.setattr(hostfacts, "CPUINFO", tmp_path / "absent")
    hostfacts.host_facts.cache_clear()
    facts = hostfacts.host_facts()
    assert facts.flags_known is False and facts.x86_int8_dot is None and facts.model_name


def test_cpuinfo_is_read_in_hostfacts_only():
    readers = [p for p in list((ROOT / "onnxkit").rglob("*.py")) + list((ROOT / "scripts").rglob("*.py"))
               if "/proc/cpuinfo" in p.read_text(encoding="utf-8", errors="replace") and p.name != "hostfacts.py"]
    assert readers == []
