"""Every command that runs a user's ONNX model with ONNX Runtime runs it in a contained worker
(every batch, or a rehearsal of the exact inputs it then runs in-process), unless --trust; a
runaway model is then one clean error."""

from __future__ import annotations

import pytest

from tests.conftest import make_runaway_onnx, run_cli

COMMANDS = {
    "run": lambda m, out: ["run", m],
    "validate": lambda m, out: ["validate", m, m],
    "optimize": lambda m, out: ["optimize", m, "-o", out],
    "quantize": lambda m, out: ["quantize", m, "-o", out, "--mode", "dynamic"],
    "bench": lambda m, out: ["bench", m, "--iterations", "2", "--warmup", "0"],
}


@pytest.fixture
def probes(monkeypatch):
    """The models a contained worker was started for."""
    from onnxkit.runtime.contained import ContainedSession

    calls: list[str] = []
    real = ContainedSession.__init__

    def record(self, model, **kw):
        calls.append(str(model))
        real(self, model, **kw)

    monkeypatch.setattr(ContainedSession, "__init__", record)
    return calls


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_untrusted_model_is_probed_and_trust_skips_it(command, probes, linear_onnx, tmp_path):
    argv = COMMANDS[command](linear_onnx, tmp_path / "out.onnx")
    r = run_cli(*argv)
    assert r.code == 0, r
    assert probes and set(probes) == {str(linear_onnx)}
    probes.clear()
    r = run_cli(*COMMANDS[command](linear_onnx, tmp_path / "out2.onnx"), "--trust")
    assert r.code == 0, r
    assert probes == []


@pytest.mark.parametrize("command", ["run", "validate", "optimize", "bench"])
def test_runaway_model_is_one_clean_error(command, tmp_path):
    model = make_runaway_onnx(tmp_path / "runaway.onnx")
    r = run_cli(*COMMANDS[command](model, tmp_path / "out.onnx"))
    assert r.code == 2, r
    assert r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.onnx").exists()
