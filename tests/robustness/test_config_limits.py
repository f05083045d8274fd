"""Pipeline configs that are hostile or meaningless: nesting past the recursion limit,
multi-hundred-kilobyte lines that cost the TOML parser quadratic time, batch sizes no machine
can feed, and gates that can never fail (a false PASSED) or never pass. Each is exit 2 in
about a second, one line naming the key, and nothing is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from onnxkit.operations.config import load_config
from tests.robustness.conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    make_linear_onnx(tmp_path / "m.onnx")
    return tmp_path


def _refused(folder: Path, text: str, *needles: str, extra: tuple = (), limit_s: float = 10) -> str:
    cfg = folder / "c.toml"
    cfg.write_text('[source]\npath = "m.onnx"\n' + text)
    before = snapshot(folder)
    t0 = time.perf_counter()
    r = run_cli("pipeline", cfg, *extra, "--json")
    assert time.perf_counter() - t0 < limit_s
    line = assert_one_line_error(r, 2, *needles)
    assert json.loads(r.stdout)["exit_code"] == 2
    assert snapshot(folder) == before
    assert not (folder / "onnxkit-out").exists()
    return line


@pytest.mark.parametrize("depth", [20_000, 200_000])
def test_arrays_nested_past_the_recursion_limit(folder, depth):
    # One bracket per line: no line is long, only the nesting is deep.
    _refused(folder, "x = " + "[\n" * depth + "]\n" * depth, "nested too deeply")


def test_nesting_just_past_the_limit_on_one_line(folder):
    _refused(folder, "[validate]\ntol = " + "[" * 1500 + "]" * 1500 + "\n", "nested too deeply")


@pytest.mark.parametrize("line", [
    "[" + ".".join(["a"] * 200_000) + "]",        # a table header 200,000 parts deep: minutes in tomllib
    ".".join(["a"] * 200_000) + " = 1",           # the same as a dotted key
    "x = " + "{a=" * 20_000 + "1" + "}" * 20_000,  # inline tables
])
def test_overlong_lines_are_refused_before_parsing(folder, line):
    _refused(folder, line + "\n", "c.toml:3", "line 3 is", "at most 10000", limit_s=5)


def test_config_over_one_mib(folder):
    _refused(folder, "# padding\n" * 120_000, "a pipeline config is at most 1 MiB")


@pytest.mark.parametrize("section", ["validate", "bench"])
def test_batch_size_no_machine_can_feed(folder, section):
    _refused(folder, f"[{section}]\nbatch_sizes = [1000000000000]\n",
             f"c.toml:4: {section}.batch_sizes: a batch of 1000000000000 rows", "a byte per row")


@pytest.mark.parametrize("text, needle", [
    ("[gates]\nmin_cosine = -5\n", "min_cosine = -5 can never fail"),
    ("[gates]\nmin_cosine = -1\n", "min_cosine = -1 can never fail"),
    ("[gates]\nmin_cosine = 1.5\n", "min_cosine = 1.5 can never pass"),
    ("[gates.max_error]\nmax_abs = 1e300\n", "max_error.max_abs = 1e+300 can never fail"),
    ("[gates.max_error]\np99_abs = 3.5e38\n", "max_error.p99_abs = 3.5e+38 can never fail"),
    ("[gates]\nmin_speedup = 0\n", "min_speedup = 0 can never fail"),
    ("[gates]\nmax_size_mb = 0\n", "max_size_mb = 0 can never pass"),
    ("[gates]\nmax_latency_ms = 0\n", "max_latency_ms = 0 can never pass"),
    ("[quantize]\nmin_cosine = -2\n", "quantize.min_cosine = -2 can never fail"),
    ("[quantize]\nbudget = 5\n", "quantize.budget = 5 can never fail"),
    ('[validate]\ntol = ["y=1e300"]\n', "validate.tol entry 'y=1e300' can never fail"),
    ('[validate]\ntol = ["1e39:0.1"]\n', "can never fail"),
])
def test_gates_that_cannot_fail_are_refused(folder, text, needle):
    line = _refused(folder, text, needle)
    assert "c.toml:" in line  # names the file and line


@pytest.mark.parametrize("override, needle", [
    ("min_cosine=-5", "--gate min_cosine = -5 can never fail"),
    ("max_error.max_abs=1e300", "--gate max_error.max_abs = 1e+300 can never fail"),
    ("min_speedup=0", "--gate min_speedup = 0 can never fail"),
])
def test_gate_overrides_that_cannot_fail_are_refused(folder, override, needle):
    _refused(folder, "", needle, extra=("--gate", override))


def test_meaningful_gates_are_kept(folder):
    cfg = folder / "c.toml"
    cfg.write_text('[source]\npath = "m.onnx"\n[gates]\nmin_cosine = 0.99\nmin_speedup = 0.5\nmax_size_mb = 1\n'
                   '[gates.max_error]\nmax_abs = 0\nmax_rel = 1e30\n[quantize]\nbudget = 0.02\nmin_cosine = -0.5\n'
                   '[validate]\ntol = ["y=1e-3:1e-2"]\nbatch_sizes = [1, 4096]\n')
    loaded = load_config(cfg, ["min_cosine=1", "max_latency_ms=0.001"])
    assert loaded.gates == {"min_cosine": 1.0, "min_speedup": 0.5, "max_size_mb": 1.0, "max_error.max_abs": 0.0,
                            "max_error.max_rel": 1e30, "max_latency_ms": 0.001}
