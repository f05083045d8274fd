"""PyTorch sources: every kind onnxkit accepts, exported and run with ONNX Runtime against
the native model at several batch sizes; the refusals that keep code from running."""

from __future__ import annotations

import json
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

from onnxkit.foundation.compare import compare_once  # noqa: E402
from onnxkit.foundation.data import random_feeds  # noqa: E402
from onnxkit.foundation.spec import parse_specs  # noqa: E402
from onnxkit.errors import ConversionError, InputError, UnsafeInput, UsageError  # noqa: E402
from onnxkit.frameworks.base import LoadOptions  # noqa: E402
from onnxkit.frameworks.registry import load_source  # noqa: E402
from onnxkit.runtime.session import make_session  # noqa: E402


@pytest.fixture(scope="session")
def torch_files(tmp_path_factory) -> dict[str, Path]:
    from fixtures.torch_models import build_all

    return build_all(tmp_path_factory.mktemp("torch_models"))


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _check_matches(src, model, *, vocab: int = 50) -> None:
    """ONNX Runtime and the native model agree at batch 1 and 3 (and another sequence length)."""
    sess = make_session(model)
    assert sess.output_names == src.output_names
    for batch, seq in ((1, 5), (3, 11)):
        feeds = random_feeds(src.input_specs, batch=batch, seq=seq, seed=batch, vocab=vocab)
        if "attention_mask" in feeds:
            feeds["attention_mask"][:, seq - 2:] = 0  # padding must be honoured, not ignored
        results = compare_once(src.predict(feeds), sess.run(feeds))
        assert results and all(r.passed for r in results), [(r.name, r.max_abs, r.problems) for r in results]


_EXPORTED: dict[str, tuple] = {}


def _load_export(key: str, source, options: LoadOptions):
    """Load and export once per session: the tests below look at the same export."""
    if key not in _EXPORTED:
        src = load_source(source, options)
        _EXPORTED[key] = (src, src.export(options))
    return _EXPORTED[key]


# ---------------------------------------------------------------- .pt2 programs

def test_pt2_mlp_specs_come_from_program(torch_files):
    src, out = _load_export("mlp", torch_files["mlp.pt2"], LoadOptions())
    assert src.framework == "torch" and src.framework_version == torch.__version__
    assert [(s.name, s.shape, s.dtype.name) for s in src.input_specs] == [("x", ("batch", 8), "float32")]
    assert src.output_names == ["output_0"]
    assert out.exporter == "torch.onnx (dynamo)" and out.notes == []
    assert [i.name for i in out.model.graph.input] == ["x"]
    assert _dims(out.model.graph.input[0]) == ["batch", 8]
    assert _dims(out.model.graph.output[0])[0] == "batch"
    # weights are in the proto itself, not in external files that no longer exist
    assert all(t.data_location != 1 for t in out.model.graph.initializer)
    _check_matches(src, out.model)


def test_pt2_cnn_exports_and_matches(torch_files):
    src, out = _load_export("cnn", torch_files["cnn.pt2"], LoadOptions(opset=18))
    assert src.input_specs[0].name == "image" and src.input_specs[0].shape == ("batch", 3, 32, 32)
    assert out.opset == 18
    assert _dims(out.model.graph.input[0]) == ["batch", 3, 32, 32]
    _check_matches(src, out.model)


def test_pt2_encoder_two_dynamic_dims(torch_files):
    src, out = _load_export("encoder", torch_files["encoder.pt2"], LoadOptions())
    ids, mask = src.input_specs
    assert (ids.name, mask.name) == ("input_ids", "attention_mask")
    assert ids.dtype == np.int64 and ids.shape[0] == "batch" and isinstance(ids.shape[1], str)
    assert ids.shape == mask.shape  # one symbol shared by both inputs
    assert src.output_names == ["output_0", "output_1"]
    for vi in out.model.graph.input:
        assert _dims(vi) == list(ids.shape)
    _check_matches(src, out.model)


def test_pt2_with_pickled_constant_needs_trust(torch_files, tmp_path):
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(torch_files["mlp.pt2"]) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("model_constants_config.json"):
                data = json.dumps({"config": {"c": {"path_name": "opaque_0", "use_pickle": True}}}).encode()
            if item.filename.endswith("models/model.json"):
                program = json.loads(data)
                program["guards_code"] = ["__import__('os').system('echo pwned')"]
                data = json.dumps(program).encode()
            zout.writestr(item, data)
    with pytest.raises(UnsafeInput) as err:
        load_source(bad, LoadOptions())
    assert err.value.exit_code == 5 and "would run code" in err.value.message


# ---------------------------------------------------------------- TorchScript

def test_torchscript_refused_without_trust(torch_files):
    with pytest.raises(UnsafeInput) as err:
        load_source(torch_files["mlp_ts.pt"], LoadOptions(inputs=parse_specs(["x:[batch,8]:float32"])))
    assert err.value.exit_code == 5 and "TorchScript" in err.value.message and "--trust" in err.value.hint


def test_torchscript_needs_input_specs(torch_files):
    with pytest.raises(UsageError) as err:
        load_source(torch_files["mlp_ts.pt"], LoadOptions(trust=True))
    assert err.value.exit_code == 2 and "--input" in err.value.message and "NAME:[d0,d1,...]:DTYPE" in err.value.message


def test_torchscript_exports_with_spec_names(torch_files):
    opts = LoadOptions(inputs=parse_specs(["x:[batch,8]:float32"]), trust=True)  # TorchScript is code
    src, out = _load_export("ts", torch_files["mlp_ts.pt"], opts)
    assert out.exporter == "torch.onnx (torchscript)"
    assert any("TorchScript" in n for n in out.notes)
    assert _dims(out.model.graph.input[0]) == ["batch", 8]
    _check_matches(src, out.model)


# ---------------------------------------------------------------- factories and weights

def test_factory_with_weights_matches_original(torch_files):
    from fixtures.torch_models import build_mlp

    opts = LoadOptions(inputs=parse_specs(["features:[n,8]:float32"]), weights=torch_files["mlp_state.pt"])
    src, out = _load_export("factory", f"{torch_files['mlp_factory.py']}:build", opts)
    assert [i.name for i in out.model.graph.input] == ["features"]
    assert _dims(out.model.graph.input[0]) == ["n", 8]
    _check_matches(src, out.model)
    # the weights really were loaded: the factory's output equals the fixture model's
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with torch.inference_mode():
        want = build_mlp()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(src.predict({"features": x})["output_0"], want, rtol=1e-6, atol=1e-6)


class Sneaky:
    """Not a tensor: a weights_only load must refuse to rebuild it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_weights_are_loaded_weights_only(torch_files, tmp_path, monkeypatch, capsys):
    state = dict(torch.load(torch_files["mlp_state.pt"], weights_only=True))
    state["extra"] = Sneaky()
    bad = tmp_path / "bad_state.pt"
    torch.save(state, bad)
    # the escape hatch that flips torch.load's *default* must not matter
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (seen.append(k.get("weights_only")), real_load(*a, **k))[1])
    opts = LoadOptions(inputs=parse_specs(["x:[batch,8]:float32"]), weights=bad, trust=True)
    with pytest.raises(UnsafeInput) as err:
        load_source(f"{torch_files['mlp_factory.py']}:build", opts)
    assert err.value.exit_code == 5 and "weights_only" in err.value.message
    assert seen == [True]
    assert "unpickled!" not in capsys.readouterr().out


def test_factory_weights_that_do_not_fit(torch_files, tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"fc1.weight": torch.zeros(3, 3)}, bad)
    opts = LoadOptions(inputs=parse_specs(["x:[batch,8]:float32"]), weights=bad)
    with pytest.raises(InputError, match="does not fit"):
        load_source(f"{torch_files['mlp_factory.py']}:build", opts)


# ---------------------------------------------------------------- pickles

def test_pickled_module_refused_without_trust(torch_files):
    with pytest.raises(UnsafeInput) as err:
        load_source(torch_files["mlp_pickled.pt"], LoadOptions(inputs=parse_specs(["x:[batch,8]:float32"])))
    assert err.value.exit_code == 5
    assert "pickled PyTorch module; unpickling runs code" in err.value.message
    assert "--trust" in err.value.message


def test_pickled_module_loads_with_trust(torch_files):
    opts = LoadOptions(trust=True, inputs=parse_specs(["x:[batch,8]:float32"]))
    src = load_source(torch_files["mlp_pickled.pt"], opts)
    ref = load_source(torch_files["mlp.pt2"], LoadOptions())
    feeds = random_feeds(src.input_specs, batch=3)
    np.testing.assert_allclose(src.predict(feeds)["output_0"], ref.predict(feeds)["output_0"], rtol=1e-6, atol=1e-6)


def test_bare_state_dict_as_source_asks_for_a_factory(torch_files):
    with pytest.raises(UsageError) as err:
        load_source(torch_files["mlp_state.pt"], LoadOptions())
    assert "state_dict" in err.value.message and "factory" in err.value.message


# ---------------------------------------------------------------- exporter choice

DATA_DEPENDENT = textwrap.dedent(
    """\
    import torch


    class Gate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            # a Python branch on a tensor's value: torch.export cannot capture it
            if x.abs().sum() > 0:
                return self.fc(x)
            return -self.fc(x)


    def build():
        torch.manual_seed(0)
        return Gate()
    """,
)


def test_auto_falls_back_to_torchscript_with_a_note(tmp_path):
    factory = tmp_path / "gate.py"
    factory.write_text(DATA_DEPENDENT)
    opts = LoadOptions(inputs=parse_specs(["x:[batch,4]:float32"]))
    src = load_source(f"{factory}:build", opts)
    out = src.export(opts)
    assert out.exporter == "torch.onnx (torchscript)"
    fallback = [n for n in out.notes if "torch.export-based exporter failed" in n]
    assert len(fallback) == 1 and "data-dependent" in fallback[0].lower() and "TorchScript exporter instead" in fallback[0]
    assert _dims(out.model.graph.input[0]) == ["batch", 4]
    _check_matches(src, out.model)


def test_exporter_failure_is_one_paragraph_naming_op_and_remedies():
    from onnxkit.frameworks.torch_errors import _conversion_error

    try:
        try:
            raise RuntimeError("Unsupported FX nodes: {'aten.fancy_op.default': ...}\nlong trace ...")
        except RuntimeError as inner:
            raise ValueError("\x1b[96mFailed to export the model with torch.export.\x1b[0m This is step 1/3") from inner
    except ValueError as exc:
        err = _conversion_error(exc, "torch.export-based (dynamo)", 17)
    assert isinstance(err, ConversionError) and err.exit_code == 4
    msg = err.message
    assert "\n" not in msg and "\x1b" not in msg
    assert "aten.fancy_op.default" in msg and "opset 17" in msg
    assert "--opset" in msg and "--exporter torchscript" in msg and "custom op" in msg


def test_unknown_exporter_is_usage_error(torch_files):
    with pytest.raises(UsageError, match="unknown exporter"):
        load_source(torch_files["mlp.pt2"], LoadOptions(exporter="fx"))


# ---------------------------------------------------------------- CLI

def test_cli_export_pt2(cli, torch_files, tmp_path):
    out = tmp_path / "mlp.onnx"
    r = cli("export", torch_files["mlp.pt2"], "-o", out, "--json")
    assert r.code == 0, r
    assert out.exists()
    assert r.json["passed"] is True


def test_cli_pickled_module_exit_5_and_no_file(cli, torch_files, tmp_path):
    out = tmp_path / "pickled.onnx"
    r = cli("export", torch_files["mlp_pickled.pt"], "-o", out, "--input", "x:[batch,8]:float32")
    assert r.code == 5, r
    assert "pickled PyTorch module" in r.stderr
    assert not out.exists()


def test_cli_export_then_inspect_transformer_shows_symbolic_dims(cli, torch_files, tmp_path):
    out = tmp_path / "encoder.onnx"
    r = cli("export", torch_files["encoder.pt2"], "-o", out, "--json")
    assert r.code == 0, r
    assert r.json["validation"]["passed"] is True
    info = cli("inspect", out, "--json")
    assert info.code == 0, info
    inputs = {i["name"]: i for i in info.json["inputs"]}
    assert set(inputs) == {"input_ids", "attention_mask"}
    batch, seq = inputs["input_ids"]["shape"]
    assert batch == "batch" and isinstance(seq, str)
    assert inputs["attention_mask"]["shape"] == [batch, seq]
    assert info.json["metadata"]["onnxkit.source_framework"] == "torch"
    # Two sequence lengths were validated because the sequence dim is dynamic.
    sets = r.json["validation"]["input_sets"]
    assert any("seq=16" in s for s in sets) and any("seq=48" in s for s in sets)


def test_cli_output_names_name_the_encoder_outputs(cli, torch_files, tmp_path):
    import onnx

    out = tmp_path / "named.onnx"
    r = cli("export", torch_files["encoder.pt2"], "-o", out, "--output-names", "hidden,pooled", "--json")
    assert r.code == 0, r
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["hidden", "pooled"]
    assert r.json["validation"]["passed"] is True


@pytest.mark.parametrize("names,message", [
    ("hidden", "1 output names given but the model returns 2 tensors"),
    ("a,a", "give distinct, non-empty names"),
    ("a,", "give distinct, non-empty names"),
])
def test_cli_bad_output_names_are_usage_errors(cli, torch_files, tmp_path, names, message):
    out = tmp_path / "bad.onnx"
    r = cli("export", torch_files["encoder.pt2"], "-o", out, "--output-names", names)
    assert r.code == 2, r
    assert message in r.stderr
    assert not out.exists()
