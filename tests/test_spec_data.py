"""Input specs, data files and random inputs: the pieces every command shares."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxkit.foundation.data import check_feeds, load_all, open_data, random_feeds
from onnxkit.foundation.spec import index_bounds, parse_spec, parse_specs, specs_from_onnx
from onnxkit.errors import InputError, UsageError


def test_parse_spec_dims_and_dtypes():
    s = parse_spec("input_ids:[batch,128]:int64")
    assert (s.name, s.shape, s.dtype) == ("input_ids", ("batch", 128), np.dtype(np.int64))
    assert parse_spec("x:[?,3]").shape == (None, 3)
    assert parse_spec("x:[1,3]").dtype == np.float32
    assert str(parse_spec("x:[batch,3]:float16")) == "x:[batch,3]:float16"


@pytest.mark.parametrize("text", ["x", "x:[1,2", "x:(1,2):float32", "x:[1,-2]:float32", "x:[1,2]:complex64", "x:[1,2]:floaty", ":[1]"])
def test_malformed_specs_show_the_expected_form(cli, linear_onnx, text):
    with pytest.raises(UsageError):
        parse_spec(text)
    r = cli("run", linear_onnx, "--input", text)
    assert r.code == 2, r
    assert "Error:" in r.stderr and "Traceback" not in r.stderr


def test_malformed_spec_message_names_the_form():
    with pytest.raises(UsageError, match=r"expected NAME:\[d0,d1,...\]:DTYPE"):
        parse_spec("x:[1,2")


def test_duplicate_spec_names_refused():
    with pytest.raises(UsageError, match="given twice"):
        parse_specs(["x:[1]:float32", "x:[2]:float32"])


def _embedding_model(vocab: int = 37) -> onnx.ModelProto:
    table = numpy_helper.from_array(np.zeros((vocab, 4), np.float32), "emb")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
            helper.make_node("Gather", ["emb", "ids64"], ["h"]),
        ],
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "seq", 4])],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_token_id_range_learned_from_the_embedding_table():
    model = _embedding_model(vocab=37)
    assert index_bounds(model) == {"ids": 37}
    specs = specs_from_onnx(model)
    assert specs[0].high == 37 and specs[1].high is None
    feeds = random_feeds(specs, batch=64, seq=32, seed=3)
    assert feeds["ids"].dtype == np.int32 and feeds["ids"].max() < 37 and feeds["ids"].min() >= 0
    assert (feeds["attention_mask"] == 1).all()
    assert feeds["ids"].shape == feeds["attention_mask"].shape == (64, 32)


def test_session_specs_carry_the_range(tmp_path):
    from onnxkit.runtime.session import make_session

    p = tmp_path / "emb.onnx"
    m = _embedding_model(vocab=11)
    m.ir_version = 8
    onnx.save(m, str(p))
    sess = make_session(p)
    assert [s.high for s in sess.input_specs] == [11, None]
    out = sess.run(random_feeds(sess.input_specs, batch=4, seq=5))
    assert out["h"].shape == (4, 5, 4)


def test_random_feeds_respect_dtypes_and_share_symbolic_dims():
    specs = parse_specs(["a:[batch,seq]:int64", "b:[batch,seq,8]:float16", "c:[batch]:bool", "d:[2,3]:uint8"])
    f = random_feeds(specs, batch=3, seq=7, seed=0)
    assert f["a"].shape == (3, 7) and f["b"].shape == (3, 7, 8) and f["c"].shape == (3,) and f["d"].shape == (2, 3)
    assert [f[k].dtype for k in "abcd"] == [np.int64, np.float16, np.bool_, np.uint8]
    again = random_feeds(specs, batch=3, seq=7, seed=0)
    assert all(np.array_equal(f[k], again[k]) for k in f)


def test_data_formats_round_trip(tmp_path):
    specs = parse_specs(["x:[batch,3]:float32"])
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.savez(tmp_path / "d.npz", x=x)
    np.save(tmp_path / "d.npy", x)
    import pandas as pd

    pd.DataFrame(x, columns=["a", "b", "c"]).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(x, columns=["a", "b", "c"]).to_parquet(tmp_path / "d.parquet")
    for name in ("d.npz", "d.npy", "d.csv", "d.parquet"):
        batches = list(open_data(tmp_path / name, specs).batches(4))
        assert [b["x"].shape[0] for b in batches] == [4, 4, 2], name
        np.testing.assert_array_equal(load_all(tmp_path / name, specs)["x"], x)


def test_feeds_that_do_not_fit_name_both_sides():
    specs = parse_specs(["x:[batch,4]:float32"])
    with pytest.raises(InputError, match=r"expected x: float32\[batch,4\], got float32\[5,3\]"):
        check_feeds({"x": np.zeros((5, 3), np.float32)}, specs)
    with pytest.raises(InputError, match=r"expected x: float32\[batch,4\], got float64\[5,4\]"):
        check_feeds({"x": np.zeros((5, 4))}, specs)  # no silent casts
    with pytest.raises(InputError, match="missing x; unexpected y"):
        check_feeds({"y": np.zeros((5, 4), np.float32)}, specs)
    with pytest.raises(InputError, match="empty"):
        check_feeds({"x": np.zeros((0, 4), np.float32)}, specs)


def test_empty_data_file_refused(tmp_path):
    (tmp_path / "e.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="holds no rows"):
        list(open_data(tmp_path / "e.csv", parse_specs(["x:[batch,2]:float32"])).batches(4))
