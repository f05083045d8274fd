"""A PyTorch factory (file.py:function) is exported with trained weights (--weights) or,
explicitly, as it builds itself (--random-weights); never with a random initialization
by default. init records the choice, and a pipeline's provenance lists what it read."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

FACTORY = textwrap.dedent(
    """\
    import pathlib
    import torch

    # Running this file leaves a mark: a refusal must come before the factory's code runs.
    pathlib.Path(__file__).with_suffix(".ran").touch()


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(6, 3)

        def forward(self, x):
            return self.fc(x)


    def build():
        return Net()
    """,
)


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "net.py").write_text(FACTORY, encoding="utf-8")
    torch.manual_seed(1)
    net = torch.nn.Module()
    net.fc = torch.nn.Linear(6, 3)
    torch.save(net.state_dict(), tmp_path / "trained.pt")
    return tmp_path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_factory_without_weights_is_refused_before_it_runs(cli, project):
    before = _files(project)
    r = cli("export", f"{project / 'net.py'}:build", "-o", project / "net.onnx", "-i", "x:[batch,6]:float32")
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("Error: ") and "--weights" in r.stderr and "--random-weights" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert _files(project) == before  # no output, and the factory never ran (no .ran mark)


def test_random_weights_exports_what_the_factory_builds(cli, project):
    out = project / "net.onnx"
    r = cli("export", f"{project / 'net.py'}:build", "-o", out, "-i", "x:[batch,6]:float32", "--random-weights", "--json")
    assert r.code == 0, r.stderr
    assert r.json["passed"] is True and out.is_file()
    assert "--random-weights" in r.json["weights"]


def test_weights_are_exported_and_named(cli, project):
    import onnx
    from onnx import numpy_helper

    out = project / "net.onnx"
    r = cli("export", f"{project / 'net.py'}:build", "-o", out, "-i", "x:[batch,6]:float32",
            "--weights", project / "trained.pt", "--json")
    assert r.code == 0, r.stderr
    assert r.json["weights"].endswith("trained.pt")
    want = torch.load(project / "trained.pt", weights_only=True)["fc.weight"].numpy()
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    assert any(v.shape == want.shape and (v == want).all() for v in inits.values())


@pytest.mark.parametrize("extra, message", [
    (["--weights", "trained.pt", "--random-weights"], "contradict"),
])
def test_both_flags_are_a_usage_error(cli, project, extra, message):
    before = _files(project)
    args = [a if a != "trained.pt" else project / a for a in extra]
    r = cli("export", f"{project / 'net.py'}:build", "-o", project / "net.onnx", "-i", "x:[batch,6]:float32", *args)
    assert r.code == 2 and message in r.stderr, r.stderr
    assert _files(project) == before


@pytest.mark.parametrize("flag", ["--weights", "--random-weights"])
def test_weights_flags_on_a_file_source_are_a_usage_error(cli, project, linear_onnx, flag):
    before = _files(project)
    extra = [flag, project / "trained.pt"] if flag == "--weights" else [flag]
    r = cli("export", linear_onnx, "-o", project / "m.onnx", *extra)
    assert r.code == 2, r.stderr
    assert f"{flag} applies to a PyTorch factory source" in r.stderr
    assert _files(project) == before


def test_init_needs_weights_or_random_weights(cli, project):
    before = _files(project)
    r = cli("init", f"{project / 'net.py'}:build", "-o", project / "onnxkit.toml", "-i", "x:[batch,6]:float32")
    assert r.code == 2 and "--random-weights" in r.stderr, r.stderr
    assert _files(project) == before


def test_init_records_weights_and_pipeline_provenance_lists_them(cli, project):
    from onnxkit.operations.config import load_config

    cfg_path = project / "onnxkit.toml"
    r = cli("init", f"{project / 'net.py'}:build", "-o", cfg_path, "-i", "x:[batch,6]:float32",
            "--weights", project / "trained.pt")
    assert r.code == 0, r.stderr
    text = cfg_path.read_text()
    assert 'weights = "trained.pt"' in text and "random_weights = false" in text
    cfg = load_config(cfg_path)
    assert cfg["source"]["weights"] == project / "trained.pt"

    from onnxkit.operations.provenance import input_artifacts

    arts = input_artifacts(cfg)
    assert [(a.role, Path(a.path).name) for a in arts] == [("weights", "trained.pt")]
    from onnxkit.foundation.files import sha256_file

    assert arts[0].sha256 == sha256_file(project / "trained.pt")


def test_init_random_weights_is_written_to_the_config(cli, project):
    from onnxkit.operations.config import load_config
    from onnxkit.operations.provenance import input_artifacts

    cfg_path = project / "onnxkit.toml"
    r = cli("init", f"{project / 'net.py'}:build", "-o", cfg_path, "-i", "x:[batch,6]:float32", "--random-weights")
    assert r.code == 0, r.stderr
    cfg = load_config(cfg_path)
    assert cfg["export"]["random_weights"] is True and cfg["source"]["weights"] is None
    arts = input_artifacts(cfg)
    assert [a.role for a in arts] == ["weights"] and "random_weights = true" in arts[0].path


@pytest.mark.slow
def test_pipeline_summary_names_the_weights_file(cli, project):
    cfg_path = project / "onnxkit.toml"
    assert cli("init", f"{project / 'net.py'}:build", "-o", cfg_path, "-i", "x:[batch,6]:float32",
               "--weights", project / "trained.pt").code == 0
    text = cfg_path.read_text()
    for section in ("optimize", "quantize", "bench"):
        head, _, rest = text.partition(f"[{section}]")
        text = head + f"[{section}]" + rest.replace("enabled = true", "enabled = false", 1)
    text = text.replace("min_cosine = 0.99", "# min_cosine")
    cfg_path.write_text(text)
    r = cli("pipeline", cfg_path, "--report-dir", project / "reports")
    assert r.code == 0, r.stdout + r.stderr
    summary = (project / "reports" / "summary.md").read_text()
    assert "| weights | trained.pt |" in summary
