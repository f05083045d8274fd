"""--input dtypes against what a PyTorch model computes with: a spec that contradicts a
.pt2's recorded signature or a module's weights is a usage error naming the input and
both dtypes; `float` means float32; a model that really takes the dtype keeps working."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

FACTORIES = textwrap.dedent(
    """\
    import torch


    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(20, 4)

        def forward(self, x):
            return self.fc(x)


    class Casts(Mlp):
        def forward(self, x):
            return self.fc(x.float())


    class Tagged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, ids, scale):
            return self.fc(self.emb(ids)) * scale


    def mlp():
        torch.manual_seed(0)
        return Mlp()


    def casts():
        torch.manual_seed(0)
        return Casts()


    def double():
        torch.manual_seed(0)
        return Mlp().double()


    def tagged():
        torch.manual_seed(0)
        return Tagged()
    """,
)


class _Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(20, 4)

    def forward(self, x):
        return self.fc(x)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("specs")
    (folder / "nets.py").write_text(FACTORIES, encoding="utf-8")
    torch.manual_seed(0)
    mlp = _Mlp()
    ep = torch.export.export(mlp, (torch.randn(2, 20),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, folder / "mlp.pt2")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_float_means_float32():
    from onnxkit.foundation.spec import parse_spec

    assert parse_spec("x:[batch,20]:float").dtype == np.float32
    assert parse_spec("x:[batch,20]:float64").dtype == np.float64
    assert parse_spec("x:[batch,20]:double").dtype == np.float64


@pytest.mark.parametrize("spec_dtype", ["int64", "float64", "int32"])
@pytest.mark.parametrize("source", ["nets.py:mlp", "mlp.pt2"])
def test_spec_dtype_contradicting_the_model_is_a_usage_error(cli, models, tmp_path, source, spec_dtype):
    src = f"{models / source}" if source.endswith(".pt2") else f"{models}/{source}"
    before = _files(models)
    extra = ["--random-weights"] if ":" in source else []
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--input", f"x:[batch,20]:{spec_dtype}", *extra)
    assert r.code == 2, r.stderr
    line = r.stderr.strip()
    assert line.startswith("Error: --input x says ") and len(line.splitlines()) == 1
    if source.endswith(".pt2"):  # the program records its signature: no probe needed
        assert line.startswith(f"Error: --input x says {spec_dtype} but mlp.pt2 was exported with x as float32")
    else:
        assert line.startswith(f"Error: --input x says {spec_dtype}, but the model computes in float32")
    assert not (tmp_path / "m.onnx").exists() and list(tmp_path.iterdir()) == []
    assert _files(models) == before


def test_float32_spec_on_a_float64_model_names_float64(cli, models, tmp_path):
    r = cli("export", f"{models}/nets.py:double", "-o", tmp_path / "m.onnx", "--input", "x:[batch,20]:float32", "--random-weights")
    assert r.code == 2, r.stderr
    assert "--input x says float32, but the model computes in float64" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("source", ["nets.py:mlp", "mlp.pt2"])
def test_float_spec_exports_a_float32_input(cli, models, tmp_path, source):
    src = f"{models / source}" if source.endswith(".pt2") else f"{models}/{source}"
    extra = ["--random-weights"] if ":" in source else []
    r = cli("export", src, "-o", tmp_path / "m.onnx", "--input", "x:[batch,20]:float", *extra, "--json")
    assert r.code == 0, r.stderr
    assert r.json["inputs"][0]["dtype"] == "float32"


def test_a_model_that_casts_its_input_keeps_the_spec_dtype(cli, models, tmp_path):
    r = cli("export", f"{models}/nets.py:casts", "-o", tmp_path / "m.onnx", "--input", "x:[batch,20]:int64",
            "--random-weights", "--json")
    assert r.code == 0, r.stderr
    assert r.json["inputs"][0]["dtype"] == "int64"


def test_only_the_contradicting_input_is_named(cli, models, tmp_path):
    # ids really are int64 (an embedding); scale is the one given wrong.
    r = cli("export", f"{models}/nets.py:tagged", "-o", tmp_path / "m.onnx", "--random-weights",
            "--input", "ids:[batch,3]:int64", "--input", "scale:[batch,3,1]:float64")
    assert r.code == 2, r.stderr
    assert "--input scale says float64, but the model computes in float32" in r.stderr
    ok = cli("export", f"{models}/nets.py:tagged", "-o", tmp_path / "m.onnx", "--random-weights",
             "--input", "ids:[batch,3]:int64", "--input", "scale:[batch,3,1]:float32")
    assert ok.code == 0, ok.stderr


def test_a_failure_no_dtype_explains_keeps_its_own_message(cli, models, tmp_path):
    r = cli("export", f"{models}/nets.py:mlp", "-o", tmp_path / "m.onnx", "--input", "x:[batch,7]:float32", "--random-weights")
    assert r.code == 2, r.stderr
    assert "the PyTorch model failed on these inputs" in r.stderr and "says" not in r.stderr


def test_a_program_that_takes_float64_is_not_second_guessed(cli, tmp_path):
    """A .pt2's signature is authoritative: float64 input on float32 weights, as recorded."""

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x, scale):
            return self.fc(x) * scale

    batch = torch.export.Dim("batch")
    ep = torch.export.export(Scaled(), (torch.randn(2, 4), torch.randn(2, 1, dtype=torch.float64)),
                             dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(ep, tmp_path / "scaled.pt2")
    r = cli("export", tmp_path / "scaled.pt2", "-o", tmp_path / "scaled.onnx", "--json")
    assert r.code == 0, r.stderr
    assert [i["dtype"] for i in r.json["inputs"]] == ["float32", "float64"]


@pytest.mark.parametrize("spec, why", [
    ("x:[batch,7]:float32", "a size the program fixed cannot be made dynamic or changed"),
    ("x:[batch,n]:float32", "a size the program fixed cannot be made dynamic or changed"),
    ("x:[batch,20,1]:float32", "3 dims instead of 2"),
])
def test_pt2_shape_spec_contradicting_the_program_is_a_usage_error(cli, models, tmp_path, spec, why):
    before = _files(models)
    r = cli("export", models / "mlp.pt2", "-o", tmp_path / "m.onnx", "--input", spec)
    assert r.code == 2, r.stderr
    assert r.stderr.startswith(f"Error: --input {spec} does not fit mlp.pt2, which was exported with x:[batch,20]:float32: {why}")
    assert list(tmp_path.iterdir()) == [] and _files(models) == before


def test_pt2_spec_may_fix_a_dynamic_size(cli, models, tmp_path):
    r = cli("export", models / "mlp.pt2", "-o", tmp_path / "m.onnx", "--input", "x:[3,20]:float32", "--json")
    assert r.code == 0, r.stderr
