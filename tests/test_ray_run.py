"""``run --engine ray``: shards, the Ray run against the local one, refusals and faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxkit.errors import InputError, UsageError
from onnxkit.foundation.shards import list_shards, read_shard
from onnxkit.foundation.spec import InputSpec

COLS = ["f0", "f1", "f2", "f3"]
X_SPEC = [InputSpec("x", ("batch", 4), np.dtype("float32"))]


def make_two_output_onnx(path: Path) -> Path:
    """x[batch,4] -> scores[batch,3] (Gemm) and label[batch] (ArgMax): a 2-D and a 1-D output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["scores"], transB=1),
         helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)],
        "two_outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        [numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def two_out(tmp_path_factory) -> Path:
    return make_two_output_onnx(tmp_path_factory.mktemp("m") / "two.onnx")


def write_shards(folder: Path, x: np.ndarray, sizes: list[int], kind: str) -> list[Path]:
    """``x`` cut into shards of ``sizes`` rows, named so that sorted order is the row order."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    paths, at = [], 0
    for i, n in enumerate(sizes):
        part = x[at:at + n]
        at += n
        p = folder / f"shard-{i:03d}.{kind}"
        frame = pd.DataFrame(part, columns=COLS)
        if kind == "parquet":
            frame.to_parquet(p, row_group_size=7)
        elif kind == "csv":
            frame.to_csv(p, index=False)
        elif kind == "jsonl":
            frame.to_json(p, orient="records", lines=True, double_precision=15)
        else:
            np.save(p, part)
        paths.append(p)
    return paths


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- shards (no Ray)

@pytest.mark.parametrize("kind", ["parquet", "csv", "jsonl", "npy"])
def test_shards_read_rows_in_sorted_order_with_offsets(tmp_path, kind):
    x = rows(23)
    write_shards(tmp_path / "d", x, [10, 3, 10], kind)
    for source in (tmp_path / "d", f"{tmp_path / 'd'}/shard-*.{kind}"):
        ss = list_shards(source)
        assert [(s.path.name, s.rows, s.offset) for s in ss.shards] == [
            (f"shard-000.{kind}", 10, 0), (f"shard-001.{kind}", 3, 10), (f"shard-002.{kind}", 10, 13)]
        got = np.concatenate([read_shard(ss.shards[i], X_SPEC, a, b)["x"] for i, a, b in ss.ranges(4)])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, x)


def test_csv_shard_ranges_count_parsed_rows_not_lines(tmp_path):
    # Blank lines are not rows: a range must start at the right row whatever precedes it.
    (tmp_path / "blank.csv").write_text("f0,f1,f2,f3\n0,0,0,0\n\n1,1,1,1\n2,2,2,2\n\n\n3,3,3,3\n4,4,4,4\n")
    shard = list_shards(tmp_path / "blank.csv").shards[0]
    assert shard.rows == 5
    got = [read_shard(shard, X_SPEC, a, b)["x"][:, 0].tolist() for a, b in [(0, 2), (2, 4), (4, 5)]]
    assert got == [[0, 1], [2, 3], [4]]


def test_shards_list_columns_feed_rank_2_inputs(tmp_path):
    import pandas as pd

    ids = np.arange(15).reshape(5, 3)
    pd.DataFrame({"input_ids": list(ids), "attention_mask": list(np.ones_like(ids))}).to_parquet(tmp_path / "t.parquet")
    specs = [InputSpec("input_ids", ("b", "s"), np.dtype("int64")), InputSpec("attention_mask", ("b", "s"), np.dtype("int64"))]
    feeds = read_shard(list_shards(tmp_path / "t.parquet").shards[0], specs, 1, 4)
    np.testing.assert_array_equal(feeds["input_ids"], ids[1:4])
    assert feeds["attention_mask"].shape == (3, 3)


def test_shards_refusals_name_the_shard(tmp_path):
    write_shards(tmp_path / "d", rows(4), [2, 2], "parquet")
    (tmp_path / "d" / "shard-009.csv").write_text("f0,f1,f2,f3\n1,2,3,4\n")
    with pytest.raises(InputError, match=r"mixes shard formats \(csv: shard-009.csv; parquet: shard-000.parquet"):
        list_shards(tmp_path / "d")
    (tmp_path / "d" / "shard-009.csv").unlink()
    (tmp_path / "d" / "shard-001.parquet").write_bytes(b"not parquet at all" * 4)
    with pytest.raises(InputError, match=r"cannot read data shard .*shard-001.parquet as parquet"):
        list_shards(tmp_path / "d")
    with pytest.raises(InputError, match="no data shards match"):
        list_shards(f"{tmp_path}/nothing-*.parquet")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no shards"):
        list_shards(tmp_path / "e")
    (tmp_path / "bad.csv").write_text("f0,f1,f2,f3\n1,2,3,4\n1,2,oops,4\n")
    shard = list_shards(tmp_path / "bad.csv").shards[0]
    with pytest.raises(InputError, match=r"bad.csv.*non-numeric"):
        read_shard(shard, X_SPEC)
    with pytest.raises(UsageError, match="unsupported data shard"):
        (tmp_path / "x.txt").write_text("1")
        list_shards(tmp_path / "x.txt")


# ---------------------------------------------------------------- refusals before any Ray work

def _local(cli, model: Path, data: Path, tmp_path: Path):
    import pandas as pd

    out = tmp_path / "local.parquet"
    r = cli("run", model, "--data", data, "-o", out, "--batch-size", "64")
    assert r.code == 0, r
    return pd.read_parquet(out)


def test_ray_refuses_existing_dir_missing_shard_and_no_ray(cli, two_out, tmp_path, monkeypatch):
    write_shards(tmp_path / "d", rows(6), [3, 3], "parquet")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("run", two_out, "--data", tmp_path / "d", "--engine", "ray", "-o", out)
    assert r.code == 2, r
    assert f"output folder {out} already exists; --engine ray never overwrites" in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    new = tmp_path / "new"
    r = cli("run", two_out, "--data", tmp_path / "missing", "--engine", "ray", "-o", new)
    assert r.code == 2, r
    assert f"data not found: {tmp_path / 'missing'}" in r.stderr and not new.exists()

    (tmp_path / "d" / "shard-001.parquet").write_bytes(b"PAR1 truncated")
    r = cli("run", two_out, "--data", tmp_path / "d", "--engine", "ray", "-o", new)
    assert r.code == 2, r
    assert "cannot read data shard" in r.stderr and "shard-001.parquet" in r.stderr and not new.exists()

    write_shards(tmp_path / "ok", rows(6), [3, 3], "parquet")
    monkeypatch.setitem(sys.modules, "ray", None)  # as on an install without the extra
    r = cli("run", two_out, "--data", tmp_path / "ok", "--engine", "ray", "-o", new)
    assert r.code == 3, r
    assert "ray is not installed; run: pip install 'onnxkit[ray]'" in r.stderr
    assert not new.exists() and leftovers(tmp_path) == []

    r = cli("run", two_out, "--data", tmp_path / "ok", "--workers", "2")
    assert r.code == 2 and "--address and --workers need --engine ray" in r.stderr, r
    r = cli("run", two_out, "--engine", "ray", "-o", new)
    assert r.code == 2 and "--engine ray scores a data set: give --data" in r.stderr, r


def test_ray_refuses_bad_address_and_output_inside_data(cli, two_out, tmp_path):
    pytest.importorskip("ray")
    d = tmp_path / "d"
    write_shards(d, rows(6), [6], "parquet")
    before = sorted(p.name for p in tmp_path.iterdir())
    cases = [
        (["--address", "nonsense"], 2, "--address 'nonsense': expected auto, HOST:PORT"),
        (["--address", "ray://127.0.0.1:1"], 3, "cannot reach the Ray cluster at ray://127.0.0.1:1"),
        (["-o", d / "out"], 2, f"output folder {d / 'out'} lies inside the data folder {d}"),
        (["--workers", "0"], 2, "--workers must be a positive integer"),
    ]
    for extra, code, message in cases:
        args = ["run", two_out, "--data", d, "--engine", "ray", *extra]
        r = cli(*args, *([] if "-o" in extra else ["-o", tmp_path / "out"]))
        assert r.code == code, (extra, r)
        assert message in r.stderr, (extra, r)
        assert sorted(p.name for p in tmp_path.iterdir()) == before and [p.name for p in d.iterdir()] == ["shard-000.parquet"]


def test_help_and_cli_import_do_not_import_ray():
    code = ("import sys\nfrom onnxkit.cli.app import main\n"
            "for argv in (['--help'], ['run', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('ray' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


# ---------------------------------------------------------------- on Ray

def test_ray_run_equals_local_parquet_folder(cli, ray_local, two_out, tmp_path):
    import pandas as pd

    x = rows(1000)
    write_shards(tmp_path / "d", x, [400, 250, 350], "parquet")
    out = tmp_path / "scored"
    r = cli("run", two_out, "--data", tmp_path / "d", "--engine", "ray", "--workers", "2", "--batch-size", "50",
            "-o", out, "--json")
    assert r.code == 0, r
    res = r.json
    assert res["rows"] == 1000 and res["workers"] == 2 and res["threads_per_worker"] == 1
    assert sum(w["rows"] for w in res["per_worker"]) == 1000 and res["rows_per_second"] > 0
    ray_frame = pd.read_parquet(out).sort_values("row_id").reset_index(drop=True)
    assert ray_frame["row_id"].dtype == np.int64
    np.testing.assert_array_equal(ray_frame["row_id"].to_numpy(), np.arange(1000))
    np.save(tmp_path / "all.npy", x)
    local = _local(cli, two_out, tmp_path / "all.npy", tmp_path)
    assert list(ray_frame.columns) == ["row_id", *local.columns]
    pd.testing.assert_frame_equal(ray_frame.drop(columns="row_id"), local)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == 1000 and manifest["columns"] == ["row_id", "scores_0", "scores_1", "scores_2", "label"]
    assert [s["first_row_id"] for s in manifest["input_shards"]] == [0, 400, 650]
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "jsonl", "npy"])
def test_ray_run_equals_local_other_formats_by_glob(cli, ray_local, two_out, tmp_path, kind):
    import pandas as pd

    x = rows(300, seed=3)
    write_shards(tmp_path / "d", x, [120, 80, 100], kind)
    out = tmp_path / "scored"
    r = cli("run", two_out, "--data", f"{tmp_path / 'd'}/shard-*.{kind}", "--engine", "ray", "--batch-size", "32",
            "-o", out)
    assert r.code == 0, r
    ray_frame = pd.read_parquet(out).sort_values("row_id").reset_index(drop=True)
    np.save(tmp_path / "all.npy", x)
    local = _local(cli, two_out, tmp_path / "all.npy", tmp_path)
    np.testing.assert_array_equal(ray_frame["row_id"].to_numpy(), np.arange(300))
    pd.testing.assert_frame_equal(ray_frame.drop(columns="row_id"), local)


@pytest.mark.slow
def test_ray_bad_shard_midway_and_runaway_batch_exit_2_naming_the_shard(cli, ray_local, two_out, tmp_path):
    from conftest import make_runaway_onnx

    d = tmp_path / "d"
    write_shards(d, rows(40), [20, 20], "csv")
    lines = (d / "shard-001.csv").read_text().splitlines()
    lines[15] = "1,2,oops,4"
    (d / "shard-001.csv").write_text("\n".join(lines) + "\n")
    before = {p: p.read_bytes() for p in d.iterdir()}
    out = tmp_path / "out"
    r = cli("run", two_out, "--data", d, "--engine", "ray", "--batch-size", "8", "-o", out)
    assert r.code == 2, r
    assert "shard-001.csv" in r.stderr and "non-numeric" in r.stderr
    assert not out.exists() and leftovers(tmp_path) == []
    assert {p: p.read_bytes() for p in d.iterdir()} == before

    r = cli("run", two_out, "--data", d, "--engine", "ray", "--workers", "3", "-o", out)
    assert r.code == 2 and "--workers 3 is more than the 2 CPU(s) the Ray cluster offers" in r.stderr, r

    runaway = make_runaway_onnx(tmp_path / "runaway.onnx")
    r = cli("run", runaway, "--data", d / "shard-000.csv", "--engine", "ray", "-o", out)
    assert r.code == 2, r
    assert "needed more than" in r.stderr and "shard-000.csv" in r.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def _actor_pids(cls_name: str) -> list[int]:
    """Processes below this one (the test session's own Ray) titled as ``cls_name`` actors;
    never another session's Ray on the same machine."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    mine = []
    for pid in parents:
        p, seen = pid, 0
        while p in parents and p != os.getpid() and seen < 64:
            p, seen = parents[p], seen + 1
        if p != os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if f"ray::{cls_name}".encode() in fh.read():
                    mine.append(pid)
        except OSError:
            pass
    return mine


@pytest.mark.slow
def test_killed_actor_loses_and_duplicates_no_row(ray_local, two_out, tmp_path):
    import pandas as pd

    from onnxkit.operations.run_ray import run_model_ray

    x = rows(6000, seed=5)
    write_shards(tmp_path / "d", x, [2000, 2000, 2000], "parquet")
    killed: list[int] = []

    def kill_one(done: int, total: int | None) -> None:
        if not killed:
            pids = _actor_pids("OnnxScorer")
            assert pids, "no actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    out = tmp_path / "out"
    res = run_model_ray(two_out, data=tmp_path / "d", output=out, batch_size=25, workers=2, progress=kill_one)
    assert killed and res.actors_replaced >= 1 and res.tasks_retried >= 1
    assert res.rows == 6000 and sum(w.rows for w in res.per_worker) == 6000
    frame = pd.read_parquet(out)
    assert len(frame) == 6000 and frame["row_id"].is_unique
    frame = frame.sort_values("row_id").reset_index(drop=True)
    np.testing.assert_array_equal(frame["row_id"].to_numpy(), np.arange(6000))
    np.save(tmp_path / "all.npy", x)
    from conftest import run_cli

    local = _local(run_cli, two_out, tmp_path / "all.npy", tmp_path)
    pd.testing.assert_frame_equal(frame.drop(columns="row_id"), local)


def test_ctrl_c_publishes_nothing(ray_local, two_out, tmp_path):
    from onnxkit.errors import Interrupted
    from onnxkit.operations.run_ray import run_model_ray

    write_shards(tmp_path / "d", rows(600), [300, 300], "parquet")

    def interrupt(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        run_model_ray(two_out, data=tmp_path / "d", output=out, batch_size=10, progress=interrupt)
    assert not out.exists() and leftovers(tmp_path) == []


def test_quiet_line_says_rows_actors_and_folder():
    from onnxkit.operations.run_ray import RayRunResult
    from onnxkit.reports.headline import headline

    r = RayRunResult(rows=1_000_000, workers=2, rows_per_second=250_000.0, output_dir="scored")
    assert headline(r) == "PASSED run: 1,000,000 rows on 2 Ray actors, 2.500e+05 rows/s, written to scored"
