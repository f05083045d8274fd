"""Export of PyTorch nets nobody here wrote: a graph that only runs at its traced sizes is a
failed conversion (auto falls back to the TorchScript exporter), never a bad input."""

from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

RNN = textwrap.dedent(
    """\
    import torch


    class TextRNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 16)
            self.lstm = torch.nn.LSTM(16, 32, batch_first=True)
            self.gru = torch.nn.GRU(32, 16, batch_first=True)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, ids):
            h, _ = self.lstm(self.emb(ids))
            h, _ = self.gru(h)
            return self.fc(h[:, -1])


    def build():
        torch.manual_seed(0)
        return TextRNN()
    """,
)


@pytest.fixture
def rnn(tmp_path):
    (tmp_path / "rnn.py").write_text(RNN)
    return tmp_path


def test_auto_exporter_falls_back_when_dynamo_bakes_the_sequence_length(cli, rnn, capfd):
    out = rnn / "rnn.onnx"
    r = cli("export", f"{rnn / 'rnn.py'}:build", "--random-weights", "-o", out, "-i", "ids:[batch,seq]:int64", "--json")
    assert r.code == 0, r
    assert r.json["exporter"] == "torch.onnx (torchscript)"
    assert any("does not run at" in n for n in r.json["notes"]), r.json["notes"]
    # The trial run's failure is handled: ONNX Runtime's own log (written to fd 2) stays quiet.
    assert "E:onnxruntime" not in capfd.readouterr().err
    # Validated at two sequence lengths, neither of them the traced one.
    assert r.json["validation"]["passed"] and out.exists()


def test_dynamo_exporter_that_bakes_a_size_is_a_conversion_failure(cli, rnn):
    out = rnn / "rnn.onnx"
    before = sorted(p.name for p in rnn.iterdir())
    r = cli("export", f"{rnn / 'rnn.py'}:build", "--random-weights", "-o", out, "-i", "ids:[batch,seq]:int64",
            "--exporter", "dynamo")
    assert r.code == 4, r
    line = r.stderr.strip().splitlines()[-1]
    # torch.export either refuses the dynamic dim itself or bakes it into a Reshape, which the
    # trial run at other sizes catches; both are exit 4 pointing at the other exporter.
    assert line.startswith("Error: ") and "--exporter torchscript" in line
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in rnn.iterdir() if p.name != "__pycache__") == [n for n in before if n != "__pycache__"]


BAKE = textwrap.dedent(
    """\
    import torch


    class Bake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            # int() of a size is a constant to the TorchScript tracer: the batch gets baked in.
            return torch.zeros(int(x.shape[0]), 3) + self.fc(x)


    def build():
        return Bake()
    """,
)


def test_exported_graph_failing_where_the_source_runs_is_exit_4(cli, tmp_path):
    # Was exit 2 "ONNX Runtime could not run the model on these inputs": the inputs were fine.
    (tmp_path / "bake.py").write_text(BAKE)
    out = tmp_path / "bake.onnx"
    r = cli("export", f"{tmp_path / 'bake.py'}:build", "--random-weights", "-o", out, "-i", "x:[batch,4]:float32",
            "--exporter", "torchscript")
    assert r.code == 4, r
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: the exported model does not run on inputs the torch model accepts (x [8, 4])"), line
    assert "nothing was written" in line and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["bake.py"]
