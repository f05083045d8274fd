"""A model's names are attacker-chosen: an output named "y\\nPASSED validate: ..." must not
print a second line that starts with PASSED under a real FAILED, in any text we write."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxkit.results import shown


FORGED = "y (ok)\nPASSED validate: max abs diff 0\r\x1b[32m\u202e"


def _mul(path: Path, k: float, outputs: int = 1) -> Path:
    names = [FORGED] + [f"extra{i}" for i in range(outputs - 1)]
    nodes = [helper.make_node("Mul", ["x", "k"], [n]) for n in names]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 4]) for n in names],
                              [numpy_helper.from_array(np.array(k, np.float32), "k")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def test_shown_escapes_what_could_forge_a_line_and_keeps_the_rest():
    assert shown("a\nb\tc\x00\x7f\u2028\u202e") == "a\\nb\\tc\\x00\\x7f\\u2028\\u202e"
    assert shown("logits ü 名前 [batch, 4]") == "logits ü 名前 [batch, 4]"


def test_quiet_line_table_markdown_and_junit_escape_a_forged_output_name(cli, tmp_path):
    ref, cand = _mul(tmp_path / "ref.onnx", 1.0), _mul(tmp_path / "cand.onnx", 2.0)
    q = cli("validate", ref, cand, "-q")
    assert q.code == 1, q
    assert q.stdout.count("\n") == 1 and q.stdout.startswith("FAILED validate"), q
    assert "y (ok)\\nPASSED validate" in q.stdout and "\\x1b[32m\\u202e" in q.stdout, q
    full = cli("validate", ref, cand)
    assert full.code == 1 and "y (ok)\\nPASSED" in full.stdout, full
    assert not any(line.lstrip("│ ").startswith("PASSED") for line in full.stdout.splitlines()), full
    assert "\x1b" not in full.stdout and "\u202e" not in full.stdout
    md, junit = tmp_path / "r.md", tmp_path / "j.xml"
    assert cli("validate", ref, cand, "--report", md, "--junit", junit, "-q").code == 1
    text = md.read_text()
    assert not any(line.startswith("PASSED") for line in text.splitlines()), text
    assert "y (ok)\\\\nPASSED" in text and "\x1b" not in text
    xml = junit.read_text()
    case = ET.fromstring(xml).find(".//testcase")
    assert case is not None and "\n" not in case.get("name") and case.get("name").startswith("output y (ok)\\nPASSED")
    failure = case.find("failure")
    assert failure is not None and not any(line.startswith("PASSED") for line in failure.text.splitlines()), xml


def test_an_error_naming_a_forged_output_stays_on_one_line(cli, tmp_path):
    ref, cand = _mul(tmp_path / "ref.onnx", 1.0), _mul(tmp_path / "cand.onnx", 1.0, outputs=2)
    r = cli("validate", ref, cand)
    assert r.code == 2, r
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ") and "y (ok)\\nPASSED" in r.stderr, r


def test_markdown_keeps_html_in_a_name_as_text(cli, tmp_path):
    from onnxkit.reports.markdown import md_cell

    assert md_cell('<script>alert("x")</script> & <img src=x onerror=y>') == (
        '&lt;script&gt;alert("x")&lt;/script&gt; &amp; &lt;img src=x onerror=y&gt;')
    name = "<script>alert(1)</script>"
    path = tmp_path / "m.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], [name])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 2])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    md = tmp_path / "r.md"
    assert cli("validate", path, path, "--report", md, "-q").code == 0
    text = md.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text, text
