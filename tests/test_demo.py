"""examples/run_demo.py, the README's main job: the options its docstring advertises exist,
a folder that is not the demo's is refused untouched, and (slow) the whole run ends with
a measured table where int8 beats PyTorch at the same top-1."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "run_demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("run_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_option_the_docstring_advertises_is_accepted(demo, capsys):
    usage = next(line for line in demo.__doc__.splitlines() if "run_demo.py" in line)
    options = re.findall(r"--[a-z-]+", usage)
    assert options and "--keep" not in options
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0
    helptext = capsys.readouterr().out
    for option in options:
        assert option in helptext


def test_out_that_is_a_file_is_refused_untouched(demo, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert demo.main(["--out", str(target)]) == 2
    assert capsys.readouterr().err.strip() == f"Error: --out {target} is a file, not a folder"
    assert target.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_out_folder_with_someone_elses_files_is_refused_untouched(demo, tmp_path, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "onnxkit.toml").write_text("# my own config\n")
    assert demo.main(["--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"Error: --out {folder} is not empty and was not made by this demo; give a new or empty folder"
    assert [p.name for p in folder.iterdir()] == ["onnxkit.toml"]
    assert (folder / "onnxkit.toml").read_text() == "# my own config\n"


def test_train_steps_below_one_is_a_usage_error(demo, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--out", str(tmp_path / "new"), "--train-steps", "0"])
    assert exc.value.code == 2
    assert "--train-steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_the_demo_ends_with_a_measured_table_where_int8_pays_off(tmp_path):
    """The whole main job, as the README runs it (a child process, like a user's shell)."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import subprocess

    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, str(DEMO), "--out", str(out)], capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    rows = {line.split()[0]: line for line in lines[head + 2 : head + 6]}
    assert list(rows) == ["source", "export", "optimize", "quantize"]
    quantized = rows["quantize"]
    assert "resnet.int8.onnx" in quantized and "kB" in quantized
    speedup = float(re.search(r"(\d+\.\d+)x \(95% CI (\d+\.\d+)-(\d+\.\d+)x\)", quantized).group(1))
    # The gate the demo sets (min_speedup=1.5) already held for the exit code; the issue's
    # goal is 2x, asserted here on the number the table printed.
    assert speedup >= 2.0, quantized
    agreement = re.findall(r"(\d+\.\d)%", quantized)
    assert float(agreement[1]) >= 99.0, quantized  # top-1 = source on the held-out digits
    assert (out / "onnxkit-out" / "report" / "report.html").exists()
    assert f"HTML report: {out / 'onnxkit-out' / 'report' / 'report.html'}" in r.stdout
