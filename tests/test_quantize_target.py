"""quantize --target-cpu: the weight range follows the CPU the model is made for, not the one
quantizing it; the target is recorded, and run/bench warn where it does not fit the host."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.foundation import hostfacts
from onnxkit.operations.quantize import target as quantize_target
from onnxkit.operations.quantize.target import (META_RESOLVED, META_TARGET, META_WEIGHTS, TARGETS, host_warnings, native_target,
                                          read_metadata, resolve_target)

VNNI_HOST = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl avx512_vnni
"""
AMX_HOST = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512bw avx512_vnni amx_tile amx_int8
"""
AVX2_HOST = """\
processor\t: 0
model name\t: AMD EPYC 7R32
flags\t\t: fpu sse4_2 avx f16c fma avx2 bmi2
"""
AVX512_NO_VNNI_HOST = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx512f avx512dq avx512bw avx512vl
"""
ALDER_LAKE_HOST = """\
processor\t: 0
model name\t: 12th Gen Intel(R) Core(TM) i7-12700
flags\t\t: fpu sse4_2 avx f16c fma avx2 avx_vnni
"""
ARM_HOST = """\
processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Make onnxkit see another machine's CPU (only through hostfacts)."""

    def use(text: str, arch: str = "x86_64") -> hostfacts.HostFacts:
        path = tmp_path / f"cpuinfo-{abs(hash(text))}"
        path.write_text(text)
        monkeypatch.setattr(hostfacts, "CPUINFO", path)
        monkeypatch.setattr(hostfacts.platform, "machine", lambda: arch)
        hostfacts.host_facts.cache_clear()
        return hostfacts.host_facts()

    yield use
    hostfacts.host_facts.cache_clear()


def _small_cnn(path: Path, seed: int = 0) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> MatMul: a quantizable Conv and MatMul, built by hand."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(8) * 0.1).astype(np.float32)
    fc = (rng.standard_normal((8, 4)) * 0.5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
         helper.make_node("Flatten", ["g"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "fc"], ["y"], name="fc")],
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"), numpy_helper.from_array(fc, "fc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def cnn(tmp_path) -> Path:
    return _small_cnn(tmp_path / "cnn.onnx")


def _int8_weights(path: Path) -> dict[str, np.ndarray]:
    m = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer
            if t.data_type == TensorProto.INT8 and len(t.dims) >= 2}


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ---------------------------------------------------------------- quantize


def test_no_flags_on_a_vnni_host_writes_portable_7bit_weights(cli, cnn, tmp_path, host):
    host(VNNI_HOST)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["reduce_range"] is True
    assert doc["target_cpu"]["given"] == "portable" and doc["target_cpu"]["int8_weights"] == "reduced"
    assert any("7-bit weights (reduce_range) for portable: safe on AVX2 without VNNI" in n for n in doc["notes"])
    weights = _int8_weights(out)
    assert set(weights) == {"w_quantized", "fc_quantized"}, weights.keys()  # the Conv's and the MatMul's
    # The Conv: symmetric per-channel with reduce_range, the largest weight of a channel maps
    # to 64, so that two u8 x s8 products fit a 16-bit lane (2 x 255 x 64 < 32768).
    assert np.abs(weights["w_quantized"].astype(np.int32)).max() == 64
    # The MatMul: wider than 7 bits, with each two neighbours along K within the same lane.
    fc = weights["fc_quantized"].astype(np.int32)
    assert np.abs(fc).max() > 64
    assert (255 * (np.abs(fc[0::2]) + np.abs(fc[1::2]))).max() <= 32767
    assert any("MatMul weight(s) use up to 8 bits" in n for n in doc["notes"])
    assert _metadata(out)[META_TARGET] == "portable"
    assert _metadata(out)[META_WEIGHTS] == "reduced"


def test_vnni_target_writes_full_range_and_run_warns_on_a_cpu_without_vnni(cli, cnn, tmp_path, host):
    host(AVX2_HOST)  # quantized on one machine, for another
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--target-cpu", "avx512-vnni", "--json")
    assert r.code == 0, r
    assert r.json["reduce_range"] is False
    assert any("full-range int8 weights for avx512-vnni" in n for n in r.json["notes"])
    assert max(np.abs(q.astype(np.int32)).max() for q in _int8_weights(out).values()) == 127
    assert _metadata(out)[META_TARGET] == "avx512-vnni" and _metadata(out)[META_WEIGHTS] == "full"
    assert META_RESOLVED not in _metadata(out)

    r = cli("run", out, "--trust", "--json")
    assert r.code == 0, r
    warning = [n for n in r.json["notes"] if "no VNNI/AMX" in n]
    assert warning and "avx512-vnni" in warning[0] and "AMD EPYC 7R32" in warning[0]
    assert "--target-cpu portable" in warning[0]
    assert "no VNNI/AMX" in r.stderr  # said to the user, not only in the JSON

    r = cli("bench", out, "--trust", "--iterations", "2", "--warmup", "0", "--batch-size", "1", "--json")
    assert r.code == 0, r
    assert any("no VNNI/AMX" in n for n in r.json["notes"])

    host(VNNI_HOST)  # where it was made for: silent
    r = cli("run", out, "--trust", "--json")
    assert r.code == 0 and not any("VNNI" in n for n in r.json["notes"]), r


def test_portable_model_runs_silently_on_a_cpu_without_vnni(cli, cnn, tmp_path, host):
    host(VNNI_HOST)
    out = tmp_path / "q.onnx"
    assert cli("quantize", cnn, "-o", out).code == 0
    host(AVX2_HOST)
    r = cli("run", out, "--trust", "--json")
    assert r.code == 0 and not any("VNNI" in n for n in r.json["notes"]), r


def test_no_reduce_range_wins_over_the_target_with_a_note_and_is_recorded(cli, cnn, tmp_path, host):
    host(VNNI_HOST)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--no-reduce-range", "--json")
    assert r.code == 0, r
    assert r.json["reduce_range"] is False
    assert any("--no-reduce-range overrides --target-cpu portable" in n for n in r.json["notes"])
    meta = _metadata(out)
    assert meta[META_TARGET] == "portable" and meta[META_WEIGHTS] == "full"
    host(AVX2_HOST)  # the warning follows the weights, not the target's name
    r = cli("run", out, "--trust", "--json")
    assert any("no VNNI/AMX" in n for n in r.json["notes"]), r


def test_reduce_range_on_a_vnni_target_is_kept_with_a_note(cli, cnn, tmp_path, host):
    host(VNNI_HOST)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--target-cpu", "amx", "--reduce-range", "--json")
    assert r.code == 0, r
    assert r.json["reduce_range"] is True
    assert any("--reduce-range overrides --target-cpu amx" in n for n in r.json["notes"])
    assert max(np.abs(q.astype(np.int32)).max() for q in _int8_weights(out).values()) == 64
    assert _metadata(out)[META_WEIGHTS] == "reduced"


@pytest.mark.parametrize("cpu, resolved, reduce_range", [
    (VNNI_HOST, "avx512-vnni", False),
    (AVX2_HOST, "avx2", True),
])
def test_native_is_recorded_as_given_with_the_resolved_target(cli, cnn, tmp_path, host, cpu, resolved, reduce_range):
    host(cpu)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--target-cpu", "native", "--json")
    assert r.code == 0, r
    assert r.json["target_cpu"]["given"] == "native" and r.json["target_cpu"]["resolved"] == resolved
    assert r.json["reduce_range"] is reduce_range
    assert any(f"native ({resolved})" in n for n in r.json["notes"])
    meta = _metadata(out)
    assert meta[META_TARGET] == "native" and meta[META_RESOLVED] == resolved


def test_unknown_target_is_exit_2_naming_the_choices_and_writes_nothing(cli, cnn, tmp_path):
    before, listing = cnn.read_bytes(), _files(tmp_path)
    for mode in ("dynamic", "auto"):
        r = cli("quantize", cnn, "-o", tmp_path / "q.onnx", "--mode", mode, "--target-cpu", "Bogus")
        assert r.code == 2, r
        assert "unknown --target-cpu 'Bogus'; choose from portable, avx2, avx512, avx512-vnni, amx, arm64, native" in r.stderr
        assert "Traceback" not in r.stderr
    assert cnn.read_bytes() == before and _files(tmp_path) == listing


def test_fp16_records_the_target_and_no_int8_weights(cli, cnn, tmp_path, host):
    host(AVX2_HOST)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--mode", "fp16", "--target-cpu", "avx512-vnni", "--json")
    assert r.code == 0, r
    assert _metadata(out)[META_TARGET] == "avx512-vnni" and _metadata(out)[META_WEIGHTS] == "none"
    r = cli("run", out, "--trust", "--json")
    # no int8 weights to saturate: only the speed note for a CPU without the target's ISA
    assert not any("no VNNI/AMX" in n for n in r.json["notes"]), r
    assert any("has no AVX512-VNNI" in n and "as accurate" in n for n in r.json["notes"]), r


def test_auto_says_the_host_is_not_the_target_and_records_it(cli, cnn, tmp_path, host):
    host(VNNI_HOST)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--mode", "auto", "--iterations", "3", "--batch-size", "1", "--calib-random", "8",
            "--require-quantized", "--json")
    assert r.code == 0, r
    assert any("not on the target (portable)" in n and "native target: avx512-vnni" in n for n in r.json["notes"]), r
    status = {c["name"]: c["status"] for c in r.json["candidates"]}
    assert status["static-qdq-s8"] == "not for the target" and r.json["chosen"] != "static-qdq-s8"
    assert status["static-qdq-pc"] != "not for the target"
    assert _metadata(out)[META_TARGET] == "portable" and _metadata(out)[META_WEIGHTS] == "reduced"


# ---------------------------------------------------------------- targets and hosts


def test_auto_variants_follow_the_target():
    from onnxkit.operations.autotune import quantize_candidates

    cands = quantize_candidates(calibrated=True)
    allowed = {t: [c.name for c in cands if resolve_target(t).allows(c.settings)] for t in TARGETS if t != "native"}
    for t in ("portable", "avx2", "avx512"):
        assert "static-qdq-s8" not in allowed[t] and "static-qdq-pc" in allowed[t]
    for t in ("avx512-vnni", "amx", "arm64"):
        assert allowed[t] == [c.name for c in cands]


@pytest.mark.parametrize("cpu, arch, expected", [
    (AMX_HOST, "x86_64", "amx"), (VNNI_HOST, "x86_64", "avx512-vnni"), (AVX512_NO_VNNI_HOST, "x86_64", "avx512"),
    (ALDER_LAKE_HOST, "x86_64", "avx2"), (AVX2_HOST, "x86_64", "avx2"), (ARM_HOST, "aarch64", "arm64"),
    ("garbage without flags", "x86_64", "portable"),
])
def test_native_target_of_each_host(host, cpu, arch, expected):
    assert native_target(host(cpu, arch)) == expected
    assert resolve_target("native").name == expected


@pytest.mark.parametrize("meta, cpu, arch, warns", [
    ({META_TARGET: "arm64", META_WEIGHTS: "full"}, AVX2_HOST, "x86_64", "no VNNI/AMX"),
    ({META_TARGET: "arm64", META_WEIGHTS: "full"}, ARM_HOST, "aarch64", None),
    ({META_TARGET: "avx512-vnni", META_WEIGHTS: "full"}, ARM_HOST, "aarch64", "has no AVX512-VNNI"),
    ({META_TARGET: "avx512-vnni", META_WEIGHTS: "full"}, ALDER_LAKE_HOST, "x86_64", "as accurate"),
    ({META_TARGET: "amx", META_WEIGHTS: "full"}, VNNI_HOST, "x86_64", "has no AMX-INT8"),
    ({META_TARGET: "amx"}, AVX2_HOST, "x86_64", "no VNNI/AMX"),  # range unrecorded: the target's default
    ({META_TARGET: "avx512", META_WEIGHTS: "reduced"}, AVX2_HOST, "x86_64", "has no AVX-512"),
    ({META_TARGET: "native", META_RESOLVED: "avx512-vnni", META_WEIGHTS: "full"}, AVX2_HOST, "x86_64",
     "native (avx512-vnni)"),
    ({META_TARGET: "native", META_WEIGHTS: "full"}, AVX2_HOST, "x86_64", None),  # nothing to judge by
    ({META_TARGET: "z80" * 1000, META_WEIGHTS: "full"}, AVX2_HOST, "x86_64", None),
    ({META_TARGET: "portable", META_WEIGHTS: "reduced"}, AVX2_HOST, "x86_64", None),
    ({}, AVX2_HOST, "x86_64", None),
    ({META_TARGET: "avx512-vnni", META_WEIGHTS: "full"}, "no flags here", "x86_64", None),  # unknown CPU: no guess
])
def test_host_warnings(host, meta, cpu, arch, warns):
    notes = host_warnings(meta, host(cpu, arch))
    if warns is None:
        assert notes == []
    else:
        assert len(notes) == 1 and warns in notes[0], notes
        assert "z80" not in notes[0]


def test_read_metadata_skips_the_graph_and_survives_hostile_files(tmp_path, cnn):
    m = onnx.load(str(cnn))
    onnx.helper.set_model_props(m, {META_TARGET: "amx", "big": "x" * (1 << 17)})
    onnx.save(m, str(tmp_path / "meta.onnx"))
    assert read_metadata(tmp_path / "meta.onnx") == {META_TARGET: "amx"}  # an oversized entry is skipped
    raw = (tmp_path / "meta.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "groups.onnx").write_bytes(b"\x0b\x0c" * 10)
    for name in ("cut.onnx", "noise.onnx", "groups.onnx", "absent.onnx"):
        assert isinstance(read_metadata(tmp_path / name), dict)
    assert read_metadata(tmp_path / "absent.onnx") == {}


def test_the_pipeline_key_offers_the_same_targets_and_rejects_others(cli, tmp_path):
    from onnxkit.operations.config import SCHEMA

    key = next(k for k in SCHEMA["quantize"] if k.name == "target_cpu")
    assert key.choices == TARGETS and key.default == quantize_target.DEFAULT_TARGET
    (tmp_path / "m.pt2").write_bytes(b"PK")
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[source]\npath = "m.pt2"\n[quantize]\ntarget_cpu = "avx9"\n')
    listing = _files(tmp_path)
    r = cli("pipeline", cfg)
    assert r.code == 2 and "quantize.target_cpu" in r.stderr and "avx9" in r.stderr, r
    assert _files(tmp_path) == listing


@pytest.mark.parametrize("target, bound", [("portable", 64), ("arm64", 127)])
def test_static_qdq_weights_follow_the_target_too(cli, cnn, tmp_path, host, target, bound):
    host(VNNI_HOST)
    out = tmp_path / "q.onnx"
    r = cli("quantize", cnn, "-o", out, "--mode", "static", "--calib-random", "8", "--no-budget", "--target-cpu", target)
    assert r.code == 0, r
    weights = _int8_weights(out)
    assert weights and max(np.abs(q.astype(np.int32)).max() for q in weights.values()) == bound
    assert _metadata(out)[META_WEIGHTS] == ("reduced" if bound == 64 else "full")
