"""``--engine ray`` against odd and hostile data, models and runs: what a new user or an
attacker would hand it, built here (no fixture files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxkit.errors import InputError
from onnxkit.foundation.shards import list_shards, read_shard
from onnxkit.foundation.spec import InputSpec

X_SPEC = [InputSpec("x", ("batch", 4), np.dtype("float32"))]
COLS = ["f0", "f1", "f2", "f3"]


def _read_all(source) -> np.ndarray:
    ss = list_shards(source)
    return np.concatenate([read_shard(ss.shards[i], X_SPEC, a, b)["x"] for i, a, b in ss.ranges(3)])


# ---------------------------------------------------------------- columns across shards (no Ray)

def test_a_shard_with_the_columns_in_another_order_feeds_the_same_values(tmp_path):
    import pandas as pd

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    (tmp_path / "d").mkdir()
    pd.DataFrame(x[:5], columns=COLS).to_parquet(tmp_path / "d" / "a.parquet")
    pd.DataFrame(x[5:], columns=COLS)[COLS[::-1]].to_parquet(tmp_path / "d" / "b.parquet")
    np.testing.assert_array_equal(_read_all(tmp_path / "d"), x)


def test_jsonl_lines_listing_keys_in_another_order_feed_the_same_values(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    lines = [json.dumps(dict(zip(COLS, map(float, r)))) for r in x[:3]]
    lines += [json.dumps(dict(zip(COLS[::-1], map(float, r[::-1])))) for r in x[3:]]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(_read_all(tmp_path / "a.jsonl"), x)


def test_a_shard_with_other_columns_is_refused_naming_it(tmp_path):
    import pandas as pd

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    (tmp_path / "d").mkdir()
    pd.DataFrame(x[:5], columns=COLS).to_csv(tmp_path / "d" / "a.csv", index=False)
    pd.DataFrame(x[5:], columns=["f0", "f1", "f2", "g3"]).to_csv(tmp_path / "d" / "b.csv", index=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()}
    with pytest.raises(InputError, match=r"data shard .*b.csv does not have the columns of the first shard: "
                                         r"missing f3; extra g3"):
        _read_all(tmp_path / "d")
    assert {p.name: p.read_bytes() for p in (tmp_path / "d").iterdir()} == before


def test_jsonl_with_a_byte_order_mark_is_read(tmp_path):
    text = '{"f0":1,"f1":2,"f2":3,"f3":4}\n\n{"f0":5,"f1":6,"f2":7,"f3":8}\n'
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    np.testing.assert_array_equal(_read_all(tmp_path / "bom.jsonl"), np.arange(1, 9, dtype=np.float32).reshape(2, 4))


# ---------------------------------------------------------------- on Ray

def make_linear(path: Path) -> Path:
    from conftest import make_linear_onnx

    return make_linear_onnx(path)


def write_parquet(folder: Path, x: np.ndarray, sizes: list[int]) -> Path:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    at = 0
    for i, n in enumerate(sizes):
        pd.DataFrame(x[at:at + n], columns=COLS).to_parquet(folder / f"part-{i:03d}.parquet")
        at += n
    return folder


def test_ray_notices_printed_while_the_run_lasts_go_to_stderr(ray_local, tmp_path):
    # Ray's own thread prints a dead worker's notice on sys.stdout: under --json that would be
    # a second document. The run must hold stdout on stderr while Ray is in use.
    from onnxkit.operations.run_ray import run_model_ray

    model = make_linear(tmp_path / "m.onnx")
    data = write_parquet(tmp_path / "d", np.ones((8, 4), np.float32), [8])
    seen: list[bool] = []
    run_model_ray(model, data=data, progress=lambda done, total: seen.append(sys.stdout is sys.stderr))
    assert seen and all(seen)
    assert sys.stdout is not sys.stderr or sys.__stdout__ is sys.__stderr__


def test_ray_results_carry_the_dtype_cast_notes_of_a_local_run(cli, ray_local, tmp_path):
    model = make_linear(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((30, 4))  # float64 for a float32 input
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "a.npy", x[:10])
    np.save(tmp_path / "d" / "b.npy", x[10:])
    np.save(tmp_path / "all.npy", x)
    local = cli("run", model, "--data", tmp_path / "all.npy", "--json")
    assert local.code == 0, local
    assert "all.npy: float64 data cast to float32 for input 'x' (rounded to float32 precision)" in local.json["notes"]
    r = cli("run", model, "--data", tmp_path / "d", "--engine", "ray", "--json")
    assert r.code == 0, r
    assert ("a.npy and 1 other shard(s): float64 data cast to float32 for input 'x' (rounded to float32 precision)"
            in r.json["notes"]), r.json["notes"]
    v = cli("validate", model, model, "--data", tmp_path / "d", "--engine", "ray", "--workers", "1", "--json")
    assert v.code == 0, v
    assert any("float64 data cast to float32 for input 'x'" in n for n in v.json["notes"]), v.json["notes"]


def test_each_actor_contained_worker_gets_its_share_of_the_memory_limit(ray_local, tmp_path):
    # Two actors on a 2-CPU node each with the whole local limit (80% of the machine) could
    # together use 160% of it.
    from onnxkit.runtime.contained import default_memory_mb
    from onnxkit.runtime.ray_actors import OnnxScorer

    total = default_memory_mb()
    if not total:
        pytest.skip("no memory limit on this machine")
    model = make_linear(tmp_path / "m.onnx")
    actor = ray_local.remote(OnnxScorer).options(num_cpus=1).remote(str(model), trust=False, specs=X_SPEC, threads=1,
                                                                      timeout_s=None, batch_size=8)
    try:
        assert ray_local.get(actor.ready.remote()) == ("ok", None)
        limit = ray_local.get(actor.__ray_call__.remote(lambda self: self.session.memory_mb))
    finally:
        ray_local.kill(actor)
    cpus = ray_local.cluster_resources()["CPU"]
    assert limit == int(total / cpus)


def test_an_actor_dying_while_it_starts_is_replaced_not_exit_3(ray_local, tmp_path):
    # An actor killed before its session is ready (the OOM killer, a node lost) is the same
    # fault as one killed mid-run: the run goes on with a replacement.
    from onnxkit.runtime.ray_cluster import ActorPool

    marker = str(tmp_path / "died-once")

    class DiesOnFirstStart:
        def __init__(self, marker: str) -> None:
            import os

            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)

        def ready(self):
            return ("ok", None)

        def where(self):
            import os

            return os.getpid(), "here"

        def echo(self, value):
            return ("ok", value)

    pool = ActorPool(ray_local, DiesOnFirstStart, (marker,), {}, workers=1, cpus=1)
    try:
        got = sorted(payload for _, payload, _ in pool.map("echo", [(i, (i,)) for i in range(4)]))
    finally:
        pool.close()
    assert got == [0, 1, 2, 3] and pool.replaced == 1


def test_validate_replaces_a_pair_whose_actor_dies_while_starting(cli, ray_local, tmp_path, monkeypatch):
    import onnxkit.operations.validate_ray_actors as actors

    marker = str(tmp_path / "died-once")

    class SourceDiesOnFirstStart(actors.SourceActor):
        def __init__(self, *args) -> None:
            import os

            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            super().__init__(*args)

    monkeypatch.setattr(actors, "SourceActor", SourceDiesOnFirstStart)
    model = make_linear(tmp_path / "m.onnx")
    data = write_parquet(tmp_path / "d", np.random.default_rng(1).standard_normal((20, 4)).astype(np.float32), [20])
    r = cli("validate", model, model, "--data", data, "--engine", "ray", "--workers", "1", "--json")
    assert r.code == 0, r
    assert r.json["passed"] and r.json["samples"] == 20


def _scaled_model(path: Path, scale: float, outputs: list[str]) -> Path:
    """x[b,4] -> m = x * [1,1,1,scale] [b,4], r = sum(m) [b], lg = log(m) [b,4] (NaN where m < 0)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kinds = {"m": ["b", 4], "r": ["b"], "lg": ["b", 4]}
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("ReduceSum", ["m", "ax"], ["r"], keepdims=0),
         helper.make_node("Log", ["m"], ["lg"])],
        "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, kinds[n]) for n in outputs],
        [numpy_helper.from_array(np.array([1, 1, 1, scale], np.float32), "k"),
         numpy_helper.from_array(np.array([1], np.int64), "ax")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_validate_on_ray_gives_every_field_of_the_local_document(cli, ray_local, tmp_path):
    import pandas as pd

    src = _scaled_model(tmp_path / "src.onnx", 1.0, ["m", "r", "lg"])
    cand = _scaled_model(tmp_path / "cand.onnx", 1.001, ["lg", "r", "m"])  # other order, NaNs on both sides
    x = np.random.default_rng(2).standard_normal((300, 4)).astype(np.float32)
    pd.DataFrame(x, columns=COLS).to_parquet(tmp_path / "all.parquet")
    write_parquet(tmp_path / "d", x, [100, 100, 100])
    local = cli("validate", src, cand, "--data", tmp_path / "all.parquet", "--batch-sizes", "100", "--json")
    on_ray = cli("validate", src, cand, "--data", tmp_path / "d", "--engine", "ray", "--workers", "1",
                 "--batch-size", "100", "--json")
    assert local.code == on_ray.code == 1, (local, on_ray)
    a, b = local.json, on_ray.json
    for doc in (a, b):  # where the rows came from and how the run went are said differently
        doc.pop("input_sets")
        doc.pop("notes")
    assert a == json.loads(json.dumps(b)), [k for k in a if a[k] != b.get(k)]


def _output_model(path: Path, outputs: dict[str, list]) -> Path:
    """x[b,4] -> each named output: the row sums ([b]) or the first columns ([b,k])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], [numpy_helper.from_array(np.array([1], np.int64), "ax"),
                        numpy_helper.from_array(np.array([0], np.int64), "st")]
    for name, shape in outputs.items():
        if len(shape) == 1:
            nodes.append(helper.make_node("ReduceSum", ["x", "ax"], [name], keepdims=0))
        else:
            inits.append(numpy_helper.from_array(np.array([shape[1]], np.int64), f"{name}_end"))
            nodes.append(helper.make_node("Slice", ["x", "st", f"{name}_end", "ax"], [name]))
    graph = helper.make_graph(nodes, "outs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("outputs, message", [
    ({"row_id": ["b"]}, "output 'row_id' gives a column named 'row_id', the name of the row id column"),
    ({"y": ["b", 2], "y_0": ["b"]}, "outputs 'y' and 'y_0' both give a column named 'y_0'"),
])
def test_an_output_column_that_would_replace_another_is_refused(cli, ray_local, tmp_path, outputs, message):
    # Written as is, the model's "row_id" replaced the row ids (exit 0, ids lost) and "y_0"
    # replaced y's first column.
    model = _output_model(tmp_path / "m.onnx", outputs)
    data = write_parquet(tmp_path / "d", np.ones((6, 4), np.float32), [3, 3])
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    r = cli("run", model, "--data", data, "--engine", "ray", "-o", tmp_path / "out")
    assert r.code == 2, r
    assert message in r.stderr
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    r = cli("run", model, "--data", data, "--engine", "ray")  # nothing written: nothing to collide
    assert r.code == 0, r


def test_a_csv_row_the_count_missed_is_refused_not_dropped(tmp_path):
    # A line holding only "" is a row to pandas (NaN) but not to the row count: the last row
    # of the shard fell outside every range and was lost (exit 0, 2 rows of 3).
    (tmp_path / "q.csv").write_text('f0,f1,f2,f3\n1,2,3,4\n""\n5,6,7,8\n')
    with pytest.raises(InputError, match=r"data shard .*q.csv parses into 3 rows but 2 were counted"):
        _read_all(tmp_path / "q.csv")


def test_an_empty_shard_in_the_middle_is_skipped_not_refused(cli, ray_local, tmp_path):
    # Spark and Dask write empty partitions; the data set around them is fine.
    import pandas as pd

    model = make_linear(tmp_path / "m.onnx")
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    data = write_parquet(tmp_path / "d", x, [3, 0, 3])
    r = cli("run", model, "--data", data, "--engine", "ray", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r
    assert r.json["rows"] == 6 and "1 empty data shard(s) skipped: part-001.parquet" in r.json["notes"]
    frame = pd.read_parquet(tmp_path / "out").sort_values("row_id")
    np.testing.assert_array_equal(frame["row_id"].to_numpy(), np.arange(6))

    nothing = write_parquet(tmp_path / "e", x, [0, 0])
    r = cli("run", model, "--data", nothing, "--engine", "ray", "-o", tmp_path / "out2")
    assert r.code == 2, r
    assert f"none of the 2 data shards of {nothing} holds a row" in r.stderr
    assert not (tmp_path / "out2").exists()


def test_an_output_with_a_fixed_first_dimension_is_refused_before_scoring(cli, tmp_path):
    # y = transpose(x) is [4, b]: with batches of 4 rows its shape passed the per-row check and
    # x's columns were written as rows 0-3 (exit 0).
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], "t",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "b"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "t.onnx"))
    data = write_parquet(tmp_path / "d", np.arange(32, dtype=np.float32).reshape(8, 4), [8])
    r = cli("run", tmp_path / "t.onnx", "--data", data, "--engine", "ray", "--batch-size", "4", "-o", tmp_path / "out")
    assert r.code == 2, r
    assert "output 'y' has a fixed first dimension of 4 while the inputs' batch dimension is free" in r.stderr
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_empty_text_shards_are_skipped_whatever_their_emptiness(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_text('{"f0":1,"f1":2,"f2":3,"f3":4}\n')
    (tmp_path / "d" / "b.jsonl").write_bytes(b"")  # 0 bytes, as text writers leave empty partitions
    (tmp_path / "d" / "c.jsonl").write_text("\n  \n")
    (tmp_path / "d" / "d.jsonl").write_text('{"f0":5,"f1":6,"f2":7,"f3":8}\n')
    ss = list_shards(tmp_path / "d")
    assert [(s.path.name, s.offset) for s in ss.shards] == [("a.jsonl", 0), ("d.jsonl", 1)]
    assert ss.notes() == ["2 empty data shard(s) skipped: b.jsonl, c.jsonl"]
    np.testing.assert_array_equal(_read_all(tmp_path / "d"), np.arange(1, 9, dtype=np.float32).reshape(2, 4))
    (tmp_path / "p").mkdir()  # a 0-byte parquet is not a parquet file: still refused
    (tmp_path / "p" / "e.parquet").write_bytes(b"")
    with pytest.raises(InputError, match=r"data shard is empty \(0 bytes\): .*e.parquet"):
        list_shards(tmp_path / "p")


def test_validate_on_ray_with_relative_paths_reads_them_where_onnxkit_runs(cli, ray_local, tmp_path, monkeypatch):
    # The actors' working folder is not this process's (another node, or a Ray started from
    # elsewhere): relative paths must be made absolute before they travel.
    make_linear(tmp_path / "m.onnx")
    write_parquet(tmp_path / "d", np.random.default_rng(4).standard_normal((12, 4)).astype(np.float32), [6, 6])
    monkeypatch.chdir(tmp_path)
    r = cli("validate", "m.onnx", "m.onnx", "--data", "d", "--engine", "ray", "--workers", "1", "--json")
    assert r.code == 0, r
    assert r.json["samples"] == 12


def test_missing_fields_read_as_nan_are_noted(tmp_path):
    # A jsonl line without a key feeds NaN to the model: a local csv run says so, Ray did not.
    (tmp_path / "a.jsonl").write_text('{"f0":1,"f1":2,"f2":3,"f3":4}\n{"f0":5,"f1":6,"f2":7}\n')
    (tmp_path / "b.csv").write_text("f0,f1,f2,f3\n1,2,3,1e999\n")
    for name, expected in (("a.jsonl", "a.jsonl: empty, missing or null field(s) read as NaN"),
                           ("b.csv", "b.csv: value(s) beyond the float range read as infinity")):
        notes: list[str] = []
        shard = list_shards(tmp_path / name).shards[0]
        read_shard(shard, X_SPEC, 0, shard.rows, notes)
        assert notes == [expected]
    (tmp_path / "c.jsonl").write_text('{"f0":1,"f1":2,"f2":3,"f3":4}\n{"f0":5,"f1":6,"f2":7}\n')
    shard = list_shards(tmp_path / "c.jsonl").shards[0]
    notes = []
    got = read_shard(shard, X_SPEC, 1, 2, notes)["x"]  # a range of lines that all lack f3: NaN, as beside others
    assert np.isnan(got[0, 3]) and got[0, :3].tolist() == [5, 6, 7]
    assert notes == ["c.jsonl: empty, missing or null field(s) read as NaN"]


def test_parquet_lists_of_lists_feed_an_input_of_rank_3(tmp_path):
    # pyarrow hands nested lists over as object arrays of arrays: they were refused as "not
    # numbers" although jsonl shards of the same values were read.
    import pandas as pd

    spec = [InputSpec("x", ("b", 2, 3), np.dtype("float32"))]
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    pd.DataFrame({"x": [r.tolist() for r in x]}).to_parquet(tmp_path / "r.parquet")
    shard = list_shards(tmp_path / "r.parquet").shards[0]
    np.testing.assert_array_equal(read_shard(shard, spec, 1, 4)["x"], x[1:])
    pd.DataFrame({"x": [[[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5]]]}).to_parquet(tmp_path / "ragged.parquet")
    with pytest.raises(InputError, match="column 'x' of ragged.parquet holds nested lists of different lengths"):
        read_shard(list_shards(tmp_path / "ragged.parquet").shards[0], spec)


def test_files_of_a_data_folder_that_are_not_shards_are_said(tmp_path):
    # A compressed shard beside plain ones was left out without a word (its rows missing, exit 0).
    import gzip

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("f0,f1,f2,f3\n1,2,3,4\n")
    (tmp_path / "d" / "b.csv.gz").write_bytes(gzip.compress(b"f0,f1,f2,f3\n5,6,7,8\n"))
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / ".a.csv.crc").write_text("x")
    ss = list_shards(tmp_path / "d")
    assert [s.path.name for s in ss.shards] == ["a.csv"]
    assert ss.notes() == ["1 file(s) of the data folder are not csv shards and were not read: b.csv.gz"]


def _static_batch_model(path: Path) -> Path:
    """y = -x with x[1,4]: a model without a batch dimension."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "static",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_model_without_a_batch_dimension_is_scored_a_row_at_a_time_as_locally(cli, ray_local, tmp_path):
    # x[1,4]: a local run cuts the data into batches of 1; Ray sent 256 rows and failed (exit 2).
    import pandas as pd

    _static_batch_model(tmp_path / "s.onnx")
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    data = write_parquet(tmp_path / "d", x, [3, 2])
    r = cli("run", tmp_path / "s.onnx", "--data", data, "--engine", "ray", "-o", tmp_path / "out", "--json")
    assert r.code == 0, r
    assert r.json["batch_size"] == 1 and r.json["rows"] == 5
    frame = pd.read_parquet(tmp_path / "out").sort_values("row_id")
    np.testing.assert_array_equal(frame[["y_0", "y_1", "y_2", "y_3"]].to_numpy(), -x)


def test_a_model_without_a_batch_dimension_is_validated_a_row_at_a_time_as_locally(cli, ray_local, tmp_path):
    # Ray's actors ran a whole range (4096 rows) through x[1,4] and failed (exit 2).
    import pandas as pd

    model = _static_batch_model(tmp_path / "s.onnx")
    x = np.arange(20, dtype=np.float32).reshape(5, 4)
    pd.DataFrame(x, columns=COLS).to_parquet(tmp_path / "all.parquet")
    data = write_parquet(tmp_path / "d", x, [3, 2])
    local = cli("validate", model, model, "--data", tmp_path / "all.parquet", "--json")
    on_ray = cli("validate", model, model, "--data", data, "--engine", "ray", "--workers", "1", "--json")
    assert local.code == on_ray.code == 0, (local, on_ray)
    assert on_ray.json["samples"] == local.json["samples"] == 5
    assert on_ray.json["batches"] == local.json["batches"] == 5
    assert on_ray.json["outputs"] == local.json["outputs"]
