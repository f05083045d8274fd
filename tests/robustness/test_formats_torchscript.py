"""A TorchScript archive is code: without --trust it is refused before torch.jit.load.

The attack archives here are real: their ``__setstate__`` (run by ``torch.jit.load``
itself) or ``forward`` calls ``torch.from_file(marker, True, n)``, which creates the file
``marker``. Before the refusal, ``onnxkit export evil.ts`` created it.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from .conftest import assert_one_line_error, make_linear_onnx, run_cli, snapshot

torch = pytest.importorskip("torch")


def _evil_on_load(path: Path, marker: Path) -> Path:
    class OnLoad(torch.nn.Module):
        def __init__(self, target: str) -> None:
            super().__init__()
            self.target = target
            self.w = torch.ones(4)

        @torch.jit.export
        def __getstate__(self):
            return (self.target, self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
            self.target = state[0]
            self.w = state[1] + torch.from_file(self.target, True, 16).sum() * 0
            self.training = state[2]

        def forward(self, x):
            return x * self.w

    torch.jit.save(torch.jit.script(OnLoad(str(marker))), str(path))
    return path


def _evil_on_forward(path: Path, marker: Path) -> Path:
    class OnForward(torch.nn.Module):
        def __init__(self, target: str) -> None:
            super().__init__()
            self.target = target

        def forward(self, x):
            return x + torch.from_file(self.target, True, 4).sum() * 0

    torch.jit.save(torch.jit.script(OnForward(str(marker))), str(path))
    return path


@pytest.fixture
def case(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    return models, out, tmp_path / "MARKER_torchscript_ran"


def _assert_refused(r, marker: Path) -> None:
    assert_one_line_error(r, 5, "TorchScript archive", "torch.from_file", "torch.export.save", "--weights state.pt", "--trust")
    assert not marker.exists(), "the archive's code ran"


@pytest.mark.parametrize("build", [_evil_on_load, _evil_on_forward])
@pytest.mark.parametrize("name", ["evil.ts", "evil.pt", "evil.pth", "evil.pt2", "evil.jit"])
def test_export_refuses_torchscript_without_trust(build, name, case):
    models, out, marker = case
    src = build(models / name, marker)
    marker.unlink(missing_ok=True)  # torch.jit.save round-trips __getstate__/__setstate__ itself
    before = snapshot(models)
    r = run_cli("export", src, "-o", out / "m.onnx", "--input", "x:[batch,4]:float32")
    _assert_refused(r, marker)
    assert list(out.iterdir()) == []
    assert snapshot(models) == before


def test_validate_refuses_torchscript_source(case):
    models, out, marker = case
    src = _evil_on_load(models / "evil.ts", marker)
    marker.unlink(missing_ok=True)
    onnx_model = make_linear_onnx(models / "m.onnx", out_features=4)
    before = snapshot(models)
    r = run_cli("validate", src, onnx_model, "--input", "x:[batch,4]:float32", "--report", out / "r.md")
    _assert_refused(r, marker)
    assert list(out.iterdir()) == []
    assert snapshot(models) == before


def test_refused_even_without_input_specs(case):
    """The refusal comes first: no hint about --input that would lead to loading it."""
    models, _, marker = case
    src = _evil_on_load(models / "evil.ts", marker)
    marker.unlink(missing_ok=True)
    r = run_cli("export", src, "-o", models / "m.onnx")
    _assert_refused(r, marker)


def test_archive_without_code_folder_is_still_torchscript(case):
    """torch.load hands any archive with constants.pkl to torch.jit.load."""
    models, out, marker = case
    src = _evil_on_load(models / "full.pt", marker)
    marker.unlink(missing_ok=True)
    stripped = models / "stripped.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(stripped, "w") as zout:
        for item in zin.infolist():
            if "/code/" not in item.filename:
                zout.writestr(item, zin.read(item))
    r = run_cli("export", stripped, "-o", out / "m.onnx", "--input", "x:[batch,4]:float32")
    _assert_refused(r, marker)


def test_trusted_torchscript_still_exports(case):
    """--trust is the documented way in, and it works (a plain scripted MLP)."""
    models, out, _ = case
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
    src = models / "mlp.ts"
    torch.jit.save(torch.jit.script(net), str(src))
    r = run_cli("export", src, "-o", out / "m.onnx", "--input", "x:[batch,4]:float32", "--trust", "--json")
    assert r.code == 0, r
    assert (out / "m.onnx").exists()
    shutil.rmtree(out)
