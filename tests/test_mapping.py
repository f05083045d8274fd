"""Validating a model exported by another tool, whose input and output names are not
onnxkit's: pairing by name, then position or type, with a note; --input-map/--output-map for
the rest; exit 2 naming both sides where no pairing is safe. Also --data keys that name no
input (issue 15, item 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxkit.foundation.mapping import Port, check_data_keys, pair_ports, parse_map
from onnxkit.errors import InputError, UsageError


def _sub_model(path: Path, a: str, b: str, out: str, *, out2: str | None = None) -> Path:
    """out = a - b (order matters, so a swapped pairing is caught); optionally out2 = a + b."""
    nodes = [helper.make_node("Sub", [a, b], [out])]
    outputs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["n", 3])]
    if out2:
        nodes.append(helper.make_node("Add", [a, b], [out2]))
        outputs.append(helper.make_tensor_value_info(out2, TensorProto.FLOAT, ["n", 3]))
    graph = helper.make_graph(
        nodes, "sub",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3]) for n in (a, b)], outputs,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- the pairing rules


def test_pairs_by_name_first_without_note():
    p = pair_ports([Port("x", 2, "float")], [Port("x", 2, "float")])
    assert p.pairs == [("x", "x")] and p.note("input") is None


def test_single_leftover_pairs_by_type_with_note():
    p = pair_ports([Port("input", 2, "float")], [Port("X", 2, "float")])
    assert p.pairs == [("input", "X")]
    assert "input -> X" in p.note("input")


def test_types_single_out_partners_in_any_order():
    p = pair_ports([Port("ids", 2, "integer"), Port("mask", 3, "float")],
                   [Port("m", 3, "float"), Port("i", 2, "integer")])
    assert sorted(p.pairs) == [("ids", "i"), ("mask", "m")]
    assert "rank/dtype" in p.note("input")


def test_same_typed_leftovers_are_refused_naming_both_sides():
    with pytest.raises(UsageError) as e:
        pair_ports([Port("a", 2, "float"), Port("b", 2, "float")], [Port("p", 2, "float"), Port("q", 2, "float")])
    msg = e.value.message
    assert "source a (rank 2, float), b (rank 2, float)" in msg and "model p (rank 2, float), q (rank 2, float)" in msg
    assert "--input-map" in e.value.hint


def test_ordered_source_pairs_by_position():
    p = pair_ports([Port("a", 2, "float"), Port("b", 2, "float")], [Port("p", 2, "float"), Port("q", 2, "float")],
                   ordered=True)
    assert p.pairs == [("a", "p"), ("b", "q")] and "(position)" in p.note("input")


def test_single_leftover_of_another_rank_is_refused():
    with pytest.raises(UsageError, match="rank or dtype differ"):
        pair_ports([Port("input", 2, "float")], [Port("X", 3, "float")])


def test_explicit_map_wins_and_is_checked():
    p = pair_ports([Port("a", 2, "float"), Port("b", 2, "float")], [Port("p", 2, "float"), Port("q", 2, "float")],
                   explicit={"a": "q", "b": "p"})
    assert p.pairs == [("b", "p"), ("a", "q")]
    with pytest.raises(UsageError, match="'zz' is not a model input"):
        pair_ports([Port("a")], [Port("p")], explicit={"a": "zz"})


def test_parse_map_refuses_malformed_and_double_targets():
    assert parse_map(["a=p,b=q"], "--input-map") == {"a": "p", "b": "q"}
    for bad in (["a"], ["=p"], ["a="]):
        with pytest.raises(UsageError, match="malformed --input-map"):
            parse_map(bad, "--input-map")
    with pytest.raises(UsageError, match="several source names onto p"):
        parse_map(["a=p", "b=p"], "--input-map")


def test_data_key_naming_no_input_is_refused():
    from onnxkit.foundation.spec import InputSpec

    specs = [InputSpec("x", ("n", 3), np.dtype(np.float32))]
    with pytest.raises(InputError, match=r"key\(s\) 'pixels' name no input of the model; its inputs are x"):
        check_data_keys(["pixels"], specs, "d.npz")
    assert check_data_keys(["arr_0"], specs, "d.npz") == {"arr_0": "x"}  # np.savez(f, array)


# ---------------------------------------------------------------- the command


def test_onnx_vs_onnx_same_typed_inputs_need_a_map(cli, tmp_path):
    ref = _sub_model(tmp_path / "ref.onnx", "a", "b", "y")
    cand = _sub_model(tmp_path / "cand.onnx", "p", "q", "y")
    before = sorted(tmp_path.iterdir())
    r = cli("validate", ref, cand)
    assert r.code == 2, r
    assert r.stderr.startswith("Error: ") and "Traceback" not in r.stderr
    assert "source a (rank 2, float), b (rank 2, float)" in r.stderr and "model p (rank 2, float), q (rank 2, float)" in r.stderr
    assert "--input-map" in r.stderr
    assert sorted(tmp_path.iterdir()) == before
    ok = cli("validate", ref, cand, "--input-map", "a=p", "--input-map", "b=q", "--json")
    assert ok.code == 0, ok
    assert any("a -> p (map)" in n and "b -> q (map)" in n for n in ok.json["notes"])
    swapped = cli("validate", ref, cand, "--input-map", "a=q,b=p")
    assert swapped.code == 1, swapped  # the map is obeyed: a swapped pairing fails a - b


def test_onnx_vs_onnx_same_typed_outputs_need_a_map(cli, tmp_path):
    ref = _sub_model(tmp_path / "ref.onnx", "a", "b", "diff", out2="total")
    cand = _sub_model(tmp_path / "cand.onnx", "a", "b", "o1", out2="o2")
    r = cli("validate", ref, cand)
    assert r.code == 2, r
    assert "diff" in r.stderr and "o1" in r.stderr and "--output-map" in r.stderr
    ok = cli("validate", ref, cand, "--output-map", "diff=o1", "--output-map", "total=o2")
    assert ok.code == 0, ok
    assert "diff -> o1 (map)" in ok.stderr


def test_input_map_naming_nothing_is_exit_2(cli, tmp_path):
    ref = _sub_model(tmp_path / "ref.onnx", "a", "b", "y")
    r = cli("validate", ref, ref, "--input-map", "a=nope")
    assert r.code == 2 and "'nope' is not a model input" in r.stderr, r


def test_data_key_naming_no_input_is_exit_2(cli, tmp_path):
    ref = _sub_model(tmp_path / "ref.onnx", "a", "b", "y")
    one = tmp_path / "one.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(one))
    data = tmp_path / "d.npz"
    np.savez(data, pixels=np.ones((4, 3), np.float32))
    report = tmp_path / "r.md"
    r = cli("validate", one, one, "--data", data, "--report", report)
    assert r.code == 2, r
    assert "'pixels' name no input of the model; its inputs are x" in r.stderr
    assert not report.exists()
    assert ref.exists()


def test_hand_made_torch_export_validates_against_its_factory(cli, tmp_path):
    torch = pytest.importorskip("torch")
    (tmp_path / "netdef.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))\n"
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("netdef", tmp_path / "netdef.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build().eval()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    onnx_path = tmp_path / "hand.onnx"
    torch.onnx.export(net, (torch.randn(2, 4),), str(onnx_path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    r = cli("validate", f"{tmp_path / 'netdef.py'}:build", onnx_path, "--weights", tmp_path / "sd.pt",
            "--input", "input:[batch,4]:float32", "--json")
    assert r.code == 0, r
    notes = " ".join(r.json["notes"])
    assert "input -> x" in notes and "-> y (position)" in notes
    # a [batch, classes] float output gets top-1 agreement whatever its name (issue 21)
    assert r.json["outputs"][0]["top1_agreement"] == 1.0


def test_hand_made_skl2onnx_export_validates_against_its_estimator(cli, tmp_path):
    pytest.importorskip("skl2onnx")
    sio = pytest.importorskip("skops.io")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))
    sio.dump(clf, tmp_path / "lr.skops")
    (tmp_path / "lr.onnx").write_bytes(to_onnx(clf, initial_types=[("X", FloatTensorType([None, 4]))]).SerializeToString())
    r = cli("validate", tmp_path / "lr.skops", tmp_path / "lr.onnx", "--json")
    assert r.code == 0, r
    notes = " ".join(r.json["notes"])
    assert "input -> X" in notes
    assert "label -> output_label" in notes and "probabilities -> output_probability" in notes


@pytest.mark.slow
def test_hand_made_tf2onnx_export_validates_against_keras(cli, tmp_path):
    tf = pytest.importorskip("tensorflow")
    tf2onnx = pytest.importorskip("tf2onnx")
    keras = tf.keras
    inp = keras.Input((6,), name="features")
    model = keras.Model(inp, keras.layers.Dense(3, name="dense")(inp))
    model.save(tmp_path / "m.keras")
    spec = (tf.TensorSpec((None, 6), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_function(tf.function(lambda x: model(x)), input_signature=spec, opset=17)
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    r = cli("validate", tmp_path / "m.keras", tmp_path / "m.onnx", "--json")
    assert r.code == 0, r
    assert "features -> pixels" in " ".join(r.json["notes"])


def test_localize_with_renamed_inputs_is_skipped_with_a_note(cli, tmp_path):
    ref = _sub_model(tmp_path / "ref.onnx", "a", "b", "y")
    cand = _sub_model(tmp_path / "cand.onnx", "p", "q", "y")
    r = cli("validate", ref, cand, "--input-map", "a=q,b=p", "--localize", "--json")
    assert r.code == 1, r  # swapped on purpose: a - b vs b - a
    assert any(n.startswith("--localize skipped") for n in r.json["notes"])


def test_input_map_with_saved_outputs_is_usage_error(cli, tmp_path):
    ref = _sub_model(tmp_path / "ref.onnx", "a", "b", "y")
    saved = tmp_path / "ref.npz"
    assert cli("validate", ref, ref, "--save-outputs", saved).code == 0
    r = cli("validate", ref, "--load-outputs", saved, "--input-map", "a=b")
    assert r.code == 2 and "--input-map pairs SOURCE's inputs" in r.stderr, r
