"""onnxkit inspect, and the CLI conventions every command shares."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from onnxkit.errors import EXIT_CODES


def test_inspect_reports_inputs_ops_and_params(cli, linear_onnx):
    r = cli("inspect", linear_onnx, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}]
    assert doc["outputs"][0]["shape"] == ["batch", 3]
    assert doc["op_histogram"] == {"Gemm": 1, "Relu": 1}
    assert doc["parameter_count"] == 4 * 3 + 3
    assert doc["parameter_bytes"] == {"float32": 60}
    assert doc["opsets"] == {"ai.onnx": 17}
    assert doc["checker_ok"] is True
    assert doc["exit_code"] == 0


def test_json_mode_keeps_stdout_to_one_document(cli, linear_onnx):
    r = cli("inspect", linear_onnx, "--json")
    import json

    json.loads(r.stdout)  # raises if anything else is on stdout
    assert "Operators" in r.stderr


def test_human_output_shows_symbolic_dims(cli, linear_onnx):
    r = cli("inspect", linear_onnx)
    assert r.code == 0
    assert "[batch, 4]" in r.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "model not found"),
        (b"", "is empty (0 bytes)"),
        (b"PK\x03\x04" + b"\x00" * 64, "looks like a ZIP archive"),
        (b"\x80\x04\x95" + b"\x00" * 32, "looks like a Python pickle"),
        (b"<html><body>404</body></html>", "not ONNX"),
    ],
)
def test_inspect_bad_files_exit_2_with_one_line(cli, tmp_path, content, message):
    p = tmp_path / "model.onnx"
    if content is not None:
        p.write_bytes(content)
    r = cli("inspect", p)
    assert r.code == 2, r
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_truncated_model_exit_2(cli, tmp_path, linear_onnx):
    data = linear_onnx.read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    r = cli("inspect", p)
    assert r.code == 2, r
    assert "Error:" in r.stderr and "Traceback" not in r.stderr


def test_directory_given_as_model_exit_2(cli, tmp_path):
    r = cli("inspect", tmp_path)
    assert r.code == 2
    assert "is a directory" in r.stderr


def test_invalid_model_exit_1(cli, tmp_path):
    from onnx import TensorProto, helper

    # Add's inputs disagree in type: parses fine, the checker rejects it.
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "bad",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]), helper.make_tensor_value_info("b", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    p = tmp_path / "bad.onnx"
    onnx.save(m, str(p))
    r = cli("inspect", p, "--json")
    assert r.code == 1, r
    assert r.json["checker_ok"] is False
    assert r.json["checker_problems"]


def test_opset_newer_than_runtime_exit_3(cli, tmp_path, linear_onnx):
    m = onnx.load(str(linear_onnx))
    m.opset_import[0].version = 99
    p = tmp_path / "future.onnx"
    onnx.save(m, str(p))
    r = cli("inspect", p)
    assert r.code == 3, r
    assert "opset 99" in r.stderr


def test_bad_flag_exit_2(cli, linear_onnx):
    r = cli("inspect", linear_onnx, "--no-such-flag")
    assert r.code == 2
    assert "No such option" in r.stderr


def test_json_error_document(cli, tmp_path):
    r = cli("inspect", tmp_path / "missing.onnx", "--json")
    assert r.code == 2
    assert r.json == {"error": f"model not found: {tmp_path / 'missing.onnx'}", "kind": "InputError", "exit_code": 2}


def test_verbose_shows_traceback(cli, tmp_path):
    r = cli("inspect", tmp_path / "missing.onnx", "--verbose")
    assert r.code == 2
    assert "Traceback" in r.stderr


def test_version_and_exit_code_table(cli):
    r = cli("--version")
    assert r.code == 0 and r.stdout.startswith("onnxkit ")
    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 70, 130}


HEAVY = ["torch", "tensorflow", "keras", "sklearn", "tf2onnx", "skl2onnx", "onnxmltools", "xgboost", "lightgbm", "ray"]


@pytest.mark.parametrize("argv", [["--help"], ["inspect", "--help"], ["inspect", "MODEL"]])
def test_startup_imports_no_framework(argv, linear_onnx):
    argv = [str(linear_onnx) if a == "MODEL" else a for a in argv]
    code = (
        "import sys\n"
        "from onnxkit.cli.app import main\n"
        f"sys.argv = ['onnxkit', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY=\n" in r.stderr, r.stderr[-2000:]


def test_custom_domain_needs_library_and_library_must_exist(cli, tmp_path, linear_onnx):
    m = onnx.load(str(linear_onnx))
    m.graph.node[1].domain = "my.ops"
    m.opset_import.append(onnx.helper.make_opsetid("my.ops", 1))
    p = tmp_path / "custom.onnx"
    onnx.save(m, str(p))
    r = cli("inspect", p)
    assert r.code == 2 and "--custom-op-library" in r.stderr
    r = cli("inspect", p, "--custom-op-library", tmp_path / "libmissing.so")
    assert r.code == 2 and "custom-op library not found" in r.stderr
    lib = tmp_path / "libmyops.so"
    lib.write_bytes(b"\x7fELF")
    r = cli("inspect", p, "--custom-op-library", lib, "--json", "--no-check")
    assert r.code == 0, r
    assert r.json["op_histogram"] == {"Gemm": 1, "my.ops.Relu": 1}


def test_missing_framework_exit_3_names_the_install(cli, tmp_path, monkeypatch):
    # A None entry in sys.modules makes `import tensorflow` raise ImportError, as on a
    # machine without the extra installed.
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"\x08\x01")
    r = cli("export", saved, "-o", tmp_path / "m.onnx")
    assert r.code == 3, r
    assert "pip install 'onnxkit[tensorflow]'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_ctrl_c_exit_130_with_one_line(cli, linear_onnx, monkeypatch):
    import onnxkit.operations.inspect as inspect_mod

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_mod, "inspect_model", interrupted)
    r = cli("inspect", linear_onnx)
    assert r.code == 130, r
    assert r.stderr.strip() == "Error: interrupted"
