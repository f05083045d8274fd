"""TensorFlow / Keras sources: load, export with tf2onnx, run in ONNX Runtime, compare;
and the safety scans that refuse Lambda layers and file-touching SavedModels unloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from onnxkit.foundation.compare import compare_once  # noqa: E402
from onnxkit.foundation.data import random_feeds  # noqa: E402
from onnxkit.errors import ConversionError, UnsafeInput, UsageError  # noqa: E402
from onnxkit.frameworks.base import LoadOptions  # noqa: E402
from onnxkit.frameworks.registry import load_source  # noqa: E402
from onnxkit.runtime.session import make_session  # noqa: E402


@pytest.fixture(scope="session")
def marker_dir(tmp_path_factory) -> Path:
    """Where the Lambda payload drops its marker while these tests run."""
    from fixtures.tensorflow_models import MARKER_ENV

    d = tmp_path_factory.mktemp("tf_markers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(MARKER_ENV, str(d))
        yield d


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory, marker_dir) -> dict[str, Path]:
    from fixtures.tensorflow_models import build_all

    return build_all(tmp_path_factory.mktemp("tf_models"))


@pytest.fixture(scope="session")
def exported(tf_models):
    """Each good source loaded and exported once: (source, outcome)."""
    out = {}
    for name in ("keras_cnn.keras", "keras_mlp.h5", "tf_savedmodel"):
        src = load_source(tf_models[name])
        out[name] = (src, src.export(LoadOptions()))
    return out


def _io(model):
    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    inits = {t.name for t in model.graph.initializer}
    return (
        {vi.name: dims(vi) for vi in model.graph.input if vi.name not in inits},
        {vi.name: dims(vi) for vi in model.graph.output},
    )


EXPECTED_IO = {
    "keras_cnn.keras": ({"image": ["batch", 28, 28, 1]}, {"logits": ["batch", 10]}),
    "keras_mlp.h5": ({"features": ["batch", 8]}, {"scores": ["batch", 4]}),
    "tf_savedmodel": ({"features": ["batch", 8]}, {"embedding": ["batch", 16], "probabilities": ["batch", 3]}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_IO))
def test_export_keeps_names_and_symbolic_batch(exported, name):
    src, outcome = exported[name]
    assert _io(outcome.model) == EXPECTED_IO[name]
    assert [s.name for s in src.input_specs] == list(EXPECTED_IO[name][0])
    assert src.input_specs[0].shape[0] == "batch"
    assert list(src.output_names) == list(EXPECTED_IO[name][1])
    assert outcome.opset == 17
    assert outcome.exporter.startswith("tf2onnx")
    assert src.framework == "tensorflow"


@pytest.mark.parametrize("name", sorted(EXPECTED_IO))
def test_onnx_matches_tensorflow_at_two_batch_sizes(exported, name):
    src, outcome = exported[name]
    sess = make_session(outcome.model)
    for batch in (1, 7):
        feeds = random_feeds(src.input_specs, batch=batch, seed=batch)
        ref = src.predict(feeds)
        cand = sess.run(feeds)
        assert set(ref) == set(cand) == set(EXPECTED_IO[name][1])
        for out in ref.values():
            assert out.shape[0] == batch
            assert np.abs(out).max() > 1e-3  # the model computes something
        results = compare_once(ref, cand)
        assert all(r.passed for r in results), [(r.name, r.max_abs) for r in results]


def test_opset_option_is_honoured(exported):
    src, _ = exported["keras_mlp.h5"]
    outcome = src.export(LoadOptions(opset=13))
    assert outcome.opset == 13
    assert {i.domain: i.version for i in outcome.model.opset_import}[""] == 13
    with pytest.raises(ConversionError, match=r"opsets up to 18, not 19; use --opset 18 or lower"):
        src.export(LoadOptions(opset=19))


def test_keras_archive_without_keras_suffix_loads(tf_models, tmp_path):
    import shutil

    renamed = tmp_path / "cnn_model.zip"
    shutil.copyfile(tf_models["keras_cnn.keras"], renamed)
    src = load_source(renamed)
    feeds = random_feeds(src.input_specs, batch=2, seed=3)
    assert src.predict(feeds)["logits"].shape == (2, 10)


def test_other_signature_is_selectable(tf_models):
    src = load_source(tf_models["tf_savedmodel"], LoadOptions(signature="embed"))
    assert src.output_names == ["embedding"]


def test_unknown_signature_is_usage_error_listing_available(tf_models):
    with pytest.raises(UsageError) as info:
        load_source(tf_models["tf_savedmodel"], LoadOptions(signature="predict"))
    assert "'predict'" in str(info.value)
    assert "embed, serving_default" in str(info.value)


def test_lambda_refused_before_it_runs(tf_models, marker_dir):
    marker = marker_dir / "keras_lambda_ran"
    marker.unlink(missing_ok=True)
    with pytest.raises(UnsafeInput) as info:
        load_source(tf_models["keras_lambda.keras"])
    assert "Lambda layer ('payload')" in str(info.value)
    assert "runs at predict()" in str(info.value)
    assert "registered custom layer class" in info.value.hint and "--trust" in info.value.hint
    assert not marker.exists()


def test_lambda_loads_and_exports_with_trust(tf_models, marker_dir):
    src = load_source(tf_models["keras_lambda.keras"], LoadOptions(trust=True))
    # Trusting means the bytecode runs: the payload's marker proves it was real code.
    assert (marker_dir / "keras_lambda_ran").exists()
    outcome = src.export(LoadOptions(trust=True))
    feeds = random_feeds(src.input_specs, batch=3, seed=0)
    assert all(r.passed for r in compare_once(src.predict(feeds), make_session(outcome.model).run(feeds)))
    assert any("Lambda" in n for n in outcome.notes)


def test_file_writing_savedmodel_refused_before_it_runs(tf_models):
    marker = tf_models["writer_marker"]
    with pytest.raises(UnsafeInput) as info:
        load_source(tf_models["tf_savedmodel_writer"])
    assert "WriteFile" in str(info.value)
    assert "--trust" in info.value.hint
    assert not marker.exists()


def test_checkpoint_ops_of_the_saver_are_not_hazards(tf_models):
    # Every SavedModel carries SaveV2/RestoreV2 for its variables: only the serving
    # graph's file ops count.
    from onnxkit.frameworks.tf_audit import _read_saved_model_proto, saved_model_hazards

    sm = _read_saved_model_proto(tf_models["tf_savedmodel"])
    assert saved_model_hazards(sm.meta_graphs[0]) == []
    sm = _read_saved_model_proto(tf_models["tf_savedmodel_writer"])
    hazards = saved_model_hazards(sm.meta_graphs[0])
    assert len(hazards) == 1 and hazards[0].startswith("WriteFile")


def test_unconvertible_op_is_conversion_error_naming_it(tf_models):
    src = load_source(tf_models["tf_unconvertible"])
    with pytest.raises(ConversionError) as info:
        src.export(LoadOptions())
    msg = str(info.value)
    assert "Igamma" in msg and "opset 17" in msg and "--opset" in msg


def test_nested_lambda_found_in_keras_config():
    from onnxkit.frameworks.tf_audit import _lambda_layers

    inner = {"class_name": "Functional", "config": {"name": "inner", "layers": [
        {"class_name": "Lambda", "config": {"name": "hidden_lambda"}}]}}
    outer = {"class_name": "Sequential", "config": {"name": "outer", "layers": [
        {"class_name": "Dense", "config": {"name": "d"}}, inner]}}
    assert _lambda_layers(outer) == ["hidden_lambda"]
    # A Python lambda given as an activation is stored as bytecode too.
    dense = {"class_name": "Dense", "config": {"name": "act_lambda", "activation": {
        "class_name": "__lambda__", "config": {"code": "4wEAAAAA", "defaults": None, "closure": None}}}}
    assert _lambda_layers({"class_name": "Functional", "config": {"name": "m", "layers": [dense]}}) == ["act_lambda"]
    assert _lambda_layers({"class_name": "Dense", "config": {"name": "lambda_like_name"}}) == []


def test_h5_lambda_refused_from_model_config(tmp_path):
    import h5py

    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Lambda", "config": {"name": "code", "function": ["4wEAAAAA", None, None]}}]}}
    path = tmp_path / "lambda.h5"
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(cfg)
    with pytest.raises(UnsafeInput, match="Lambda layer \\('code'\\)"):
        load_source(path)


# ----------------------------------------------------------------------------- CLI

def test_cli_export_keras(cli, tf_models, tmp_path):
    out = tmp_path / "mlp.onnx"
    r = cli("export", tf_models["keras_mlp.h5"], "-o", out, "--json")
    assert r.code == 0, r
    doc = r.json
    assert doc["framework"] == "tensorflow"
    assert doc["inputs"] == [{"name": "features", "shape": ["batch", 8], "dtype": "float32"}]
    assert [o["name"] for o in doc["outputs"]] == ["scores"]
    assert doc["validation"]["passed"] is True
    assert out.exists()


def test_cli_export_savedmodel(cli, tf_models, tmp_path):
    out = tmp_path / "sm.onnx"
    r = cli("export", tf_models["tf_savedmodel"], "-o", out, "--json")
    assert r.code == 0, r
    assert [o["name"] for o in r.json["outputs"]] == ["embedding", "probabilities"]


def test_cli_lambda_exit_5_writes_nothing(cli, tf_models, tmp_path, marker_dir):
    marker = marker_dir / "keras_lambda_ran"
    marker.unlink(missing_ok=True)
    out = tmp_path / "lambda.onnx"
    r = cli("export", tf_models["keras_lambda.keras"], "-o", out)
    assert r.code == 5, r
    assert "Lambda layer" in r.stderr and "--trust" in r.stderr
    assert not out.exists() and not marker.exists()
    assert not [p for p in tmp_path.iterdir()]


def test_cli_writer_savedmodel_exit_5(cli, tf_models, tmp_path):
    out = tmp_path / "w.onnx"
    r = cli("export", tf_models["tf_savedmodel_writer"], "-o", out)
    assert r.code == 5, r
    assert "WriteFile" in r.stderr
    assert not out.exists() and not tf_models["writer_marker"].exists()


def test_cli_unknown_signature_exit_2(cli, tf_models, tmp_path):
    r = cli("export", tf_models["tf_savedmodel"], "-o", tmp_path / "x.onnx", "--signature", "nope")
    assert r.code == 2, r
    assert "no signature 'nope'" in r.stderr and "serving_default" in r.stderr


def test_cli_unconvertible_exit_4(cli, tf_models, tmp_path):
    out = tmp_path / "u.onnx"
    r = cli("export", tf_models["tf_unconvertible"], "-o", out)
    assert r.code == 4, r
    assert "Igamma" in r.stderr
    assert not out.exists()


def test_tensorflow_not_imported_by_cli_help():
    import subprocess
    import sys

    code = "import sys; from onnxkit.cli.app import main\n" \
           "try:\n    main(['export', '--help'])\nexcept SystemExit:\n    pass\n" \
           "print('tensorflow' in sys.modules)"
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.strip().endswith("False"), r
