"""validate on Ray: the mergeable comparison (no Ray needed), then local vs Ray runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxkit.foundation.compare import Comparator, Tolerance, make_tolerance
from onnxkit.foundation.compare_merge import ExactSum, MergeableComparator, RelativeErrorSketch, SKETCH_ALPHA, merge_all

EXACT_FIELDS = (
    "name", "reference_name", "ref_shape", "cand_shape", "ref_dtype", "cand_dtype", "kind", "atol", "rtol",
    "elements", "max_abs", "max_rel", "rel_error", "mean_abs", "p99_abs", "out_of_tol", "out_of_tol_share",
    "worst_index", "worst_ref", "worst_cand", "cosine", "cosine_min", "label_agreement", "top1_agreement",
    "topk_agreement", "topk", "nan_mismatch", "passed", "problems", "warnings", "warning_codes",
)


def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


def _batches(rows: int, seed: int, *, width: int = 3, nan: bool = False):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((rows, width)).astype(np.float32)
    cand = ref + rng.standard_normal((rows, width)).astype(np.float32) * np.float32(3e-5)
    labels = rng.integers(0, 3, rows)
    cand_labels = np.where(rng.random(rows) < 0.05, (labels + 1) % 3, labels)
    if nan and rows > 2:
        cand[1, 0] = np.nan
    return {"probabilities": ref, "label": labels}, {"probabilities": cand, "label": cand_labels}


def _split(ref, cand, cuts):
    edges = [0, *sorted(cuts), len(next(iter(ref.values())))]
    return [({k: v[a:b] for k, v in ref.items()}, {k: v[a:b] for k, v in cand.items()}, a)
            for a, b in zip(edges, edges[1:]) if b > a]


def _states(pieces, tol):
    out = []
    for r, c, first in pieces:
        s = MergeableComparator(tol, first_row=first)
        s.add(r, c)
        out.append(s)
    return out


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(2, 300), cuts=st.lists(st.integers(1, 299), max_size=6, unique=True),
       seed=st.integers(0, 5), order_seed=st.integers(0, 1000), nan=st.booleans())
def test_merging_in_any_split_and_order_equals_one_pass(rows, cuts, seed, order_seed, nan):
    ref, cand = _batches(rows, seed, nan=nan)
    tol = make_tolerance(None, None, "fp32")
    one = MergeableComparator(tol)  # what local validate uses
    one.add(ref, cand)
    expected = {o.name: o.to_dict() for o in one.results()}
    plain = Comparator(tol)
    plain.add(ref, cand)
    for o in plain.results():  # the plain comparator differs at most by the rounding of its sums
        for key in EXACT_FIELDS:
            if key in ("mean_abs", "rel_error") and o.to_dict()[key] is not None:
                assert o.to_dict()[key] == pytest.approx(expected[o.name][key], rel=1e-12)
            else:
                assert _same(o.to_dict()[key], expected[o.name][key]), key
    pieces = _split(ref, cand, [c for c in cuts if c < rows])
    states = _states(pieces, tol)
    np.random.default_rng(order_seed).shuffle(states)
    merged = merge_all(states)
    assert merged.rows == rows and merged.batches == len(pieces)
    got = {o.name: o.to_dict() for o in merged.results()}
    for name, exp in expected.items():
        for key in EXACT_FIELDS:
            assert _same(got[name][key], exp[key]), (name, key, got[name][key], exp[key])


def test_states_compared_before_their_place_is_known_shift_into_place():
    ref, cand = _batches(50, 1)
    cand["probabilities"][37, 2] += 1.0
    tol = Tolerance()
    a = MergeableComparator(tol)
    a.add({k: v[:30] for k, v in ref.items()}, {k: v[:30] for k, v in cand.items()})
    b = MergeableComparator(tol)  # a second shard, compared from row 0
    b.add({k: v[30:] for k, v in ref.items()}, {k: v[30:] for k, v in cand.items()})
    b.shift_rows(a.row_count)
    res = {o.name: o for o in merge_all([b, a]).results()}
    assert res["probabilities"].worst_index == [37, 2]
    assert not res["probabilities"].passed


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False, allow_subnormal=False), min_size=1, max_size=400),
       st.sampled_from([0.5, 0.9, 0.99, 1.0]), st.integers(1, 5))
def test_sketch_percentiles_within_the_stated_bound(values, q, parts):
    arr = np.asarray(values)
    sketches = []
    for chunk in np.array_split(arr, parts):
        s = RelativeErrorSketch()
        s.add(chunk)
        sketches.append(s)
    merged = sketches.pop()
    for s in sketches:
        merged.merge(s)
    exact = float(np.percentile(arr, 100 * q))
    assert abs(merged.quantile(q) - exact) <= SKETCH_ALPHA * exact + 1e-30


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), max_size=200), st.integers(0, 200))
def test_exact_sum_is_the_correctly_rounded_total_for_any_split(values, cut):
    import math

    a, b = ExactSum(), ExactSum()
    a.add(np.asarray(values[:cut], dtype=np.float64))
    b.add(np.asarray(values[cut:], dtype=np.float64))
    b.merge(a)
    assert b.value() == math.fsum(values)


def test_p99_past_the_exact_limit_comes_from_the_sketch(monkeypatch):
    import onnxkit.foundation.compare_merge as cm

    monkeypatch.setattr(cm, "EXACT_P99_LIMIT", 500)
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((400, 4))
    cand = ref + rng.exponential(1e-6, (400, 4))
    diffs = np.abs(cand - ref).ravel()
    states = _states(_split({"y": ref}, {"y": cand}, [100, 150, 333]), Tolerance())
    merged = merge_all(states).results()[0]
    exact = float(np.percentile(diffs, 99))
    assert merged.p99_abs != exact and abs(merged.p99_abs - exact) <= SKETCH_ALPHA * exact


# ---------------------------------------------------------------- validate --engine ray

ROWS = 3000
SHARD_ROWS = 750  # local --data runs use the same cuts (--batch-sizes 750) so the batches agree


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """An xgboost classifier exported by onnxkit, its perturbed twin, one parquet of ROWS rows
    and the same rows in four shards."""
    xgb = pytest.importorskip("xgboost")
    pd = pytest.importorskip("pandas")
    from tests.conftest import run_cli

    d = tmp_path_factory.mktemp("rayval")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1500, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
    xgb.XGBClassifier(n_estimators=12, max_depth=3).fit(x, y).save_model(d / "xgb.json")
    r = run_cli("export", d / "xgb.json", "-o", d / "xgb.onnx", "-q")
    assert r.code == 0, r
    _perturb(d / "xgb.onnx", d / "bad.onnx")
    rows = rng.standard_normal((ROWS, 5)).astype(np.float32)
    cols = [f"f{i}" for i in range(5)]
    pd.DataFrame(rows, columns=cols).to_parquet(d / "all.parquet")
    (d / "shards").mkdir()
    for k in range(ROWS // SHARD_ROWS):
        pd.DataFrame(rows[k * SHARD_ROWS:(k + 1) * SHARD_ROWS], columns=cols).to_parquet(d / "shards" / f"part-{k}.parquet")
    return d


def _perturb(src, dst) -> None:
    """Every leaf weight of the tree ensemble moved by 0.05: probabilities shift, verdict FAILED."""
    import onnx

    m = onnx.load(src)
    for node in m.graph.node:
        for att in node.attribute:
            if att.name in ("class_weights", "target_weights"):
                att.floats[:] = [w + 0.05 for w in att.floats]
    onnx.save(m, dst)


def _numbers(doc):
    return {o["name"]: o for o in doc["outputs"]}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["xgb.onnx", "bad.onnx"])
def test_ray_and_local_agree_on_verdict_and_numbers(cli, tabular, ray_local, model):
    d = tabular
    local = cli("validate", d / "xgb.json", d / model, "--data", d / "all.parquet", "--batch-sizes", str(SHARD_ROWS), "--json")
    # One actor pair with both CPUs: ONNX Runtime gets 2 threads, as locally (a tree ensemble's
    # sums depend on ONNX Runtime's thread count).
    ray_run = cli("validate", d / "xgb.json", d / model, "--data", d / "shards", "--engine", "ray", "--workers", "1",
                  "--json")
    expected_code = 0 if model == "xgb.onnx" else 1
    assert local.code == expected_code, local
    assert ray_run.code == expected_code, ray_run
    a, b = local.json, ray_run.json
    assert a["passed"] is b["passed"] is (expected_code == 0)
    assert a["samples"] == b["samples"] == ROWS
    assert sorted(a) == sorted(b)  # the same document schema, key for key
    for name, o in _numbers(a).items():
        p = _numbers(b)[name]
        assert sorted(o) == sorted(p)
        for key in o:
            assert o[key] == p[key], (name, key, o[key], p[key])
    assert any("engine ray" in n for n in b["notes"])


@pytest.mark.slow
def test_ray_reports_have_the_local_schema(cli, tabular, ray_local, tmp_path):
    d = tabular
    files = {}
    for engine in ("local", "ray"):
        extra = ["--data", d / "all.parquet"] if engine == "local" else ["--data", d / "shards", "--engine", "ray"]
        r = cli("validate", d / "xgb.json", d / "bad.onnx", *extra, "--junit", tmp_path / f"{engine}.xml",
                "--report", tmp_path / f"{engine}.md", "-q")
        assert r.code == 1, r
        files[engine] = (tmp_path / f"{engine}.xml").read_text(), (tmp_path / f"{engine}.md").read_text()
    import re

    def testcases(xml):
        return re.findall(r'<testcase [^>]*\bname="([^"]+)"', xml)

    assert testcases(files["local"][0]) == testcases(files["ray"][0]) == ["output label", "output probabilities"]
    headings = [[ln for ln in md.splitlines() if ln.startswith(("#", "|"))][:3] for _, md in files.values()]
    assert headings[0][0] == headings[1][0]


def test_ray_needs_shards_and_refuses_what_it_cannot_do(cli, tabular, tmp_path):
    d = tabular
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--engine", "ray", "--junit", tmp_path / "r.xml")
    assert r.code == 2 and "--engine ray validates a data set" in r.stderr, r
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "ray", "--localize")
    assert r.code == 2 and "--localize cannot be combined with --engine ray" in r.stderr, r
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "all.parquet", "--workers", "2")
    assert r.code == 2 and "--workers only apply with --engine ray" in r.stderr, r
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "spark")
    assert r.code == 2 and "unknown --engine 'spark'" in r.stderr, r
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "ray", "--batch-size", "0")
    assert r.code == 2 and "--batch-size must be a positive integer" in r.stderr, r
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "ray", "--provider", "openvino")
    assert r.code == 2 and "--provider openvino cannot be combined with --engine ray" in r.stderr, r
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "ray", "--precision", "f32")
    assert r.code == 2 and "--precision cannot be combined with --engine ray" in r.stderr, r
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_shard_exits_2_naming_it_before_ray_starts(cli, tabular, tmp_path, monkeypatch):
    import shutil

    d = tabular
    shards = tmp_path / "shards"
    shutil.copytree(d / "shards", shards)
    (shards / "part-9.parquet").write_bytes(b"PAR1 this is not parquet")
    before = {p.name: p.read_bytes() for p in shards.iterdir()}
    started = []
    import onnxkit.runtime.ray_cluster as rc

    monkeypatch.setattr(rc.RayCluster, "__enter__", lambda self: started.append(1) or self)
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", shards, "--engine", "ray",
            "--junit", tmp_path / "out.xml")
    assert r.code == 2, r
    assert "part-9.parquet" in r.stderr and r.stderr.startswith("Error:") and "Traceback" not in r.stderr
    assert started == []
    assert not (tmp_path / "out.xml").exists()
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == before


def test_without_ray_installed_exit_3_names_the_extra(cli, tabular, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    d = tabular
    r = cli("validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "ray",
            "--report", tmp_path / "r.md")
    assert r.code == 3, r
    assert "ray" in r.stderr and "onnxkit[ray]" in r.stderr, r
    assert list(tmp_path.iterdir()) == []


def test_an_untrusted_pickle_source_is_refused_on_ray_as_locally(cli, tabular, tmp_path):
    import pickle

    d = tabular
    bad = tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps({"not": "a model"}))
    r = cli("validate", bad, d / "xgb.onnx", "--data", d / "shards", "--engine", "ray", "--framework", "sklearn")
    assert r.code == 5, r
    assert "--trust" in r.stderr


# ---------------------------------------------------------------- the pipeline's validation stages

def _pipeline_config(tmp_path, tabular, validate_lines: list[str]):
    cfg = tmp_path / "onnxkit.toml"
    cfg.write_text("\n".join([
        "[source]", f'path = "{(tabular / "xgb.json").as_posix()}"',
        "[output]", f'dir = "{(tmp_path / "out").as_posix()}"',
        "[validate]", *validate_lines,
        "[optimize]", "enabled = false",
        "[quantize]", "enabled = false",
        "[bench]", "enabled = false",
    ]) + "\n")
    return cfg


@pytest.mark.parametrize("lines, message", [
    (['engine = "ray"'], 'validate.engine = "ray" needs validate.data'),
    (["workers = 2"], 'validate.workers only applies with validate.engine = "ray"'),
    (['engine = "spark"'], "is not one of local, ray"),
    (['engine = "ray"', 'data = "DATA"', "samples = 10"], "validate.samples cannot be combined"),
    (['engine = "ray"', 'data = "DATA"', "workers = 0"], "validate.workers = 0 must be at least 1"),
])
def test_pipeline_refuses_engine_settings_that_cannot_be_meant(cli, tabular, tmp_path, lines, message):
    lines = [ln.replace("DATA", (tabular / "shards").as_posix()) for ln in lines]
    r = cli("pipeline", _pipeline_config(tmp_path, tabular, lines))
    assert r.code == 2, r
    assert message in r.stderr, r
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_pipeline_validates_on_ray_with_the_local_numbers(cli, tabular, ray_local, tmp_path):
    shards = (tabular / "shards").as_posix()
    r = cli("pipeline", _pipeline_config(tmp_path, tabular, ['engine = "ray"', f'data = "{shards}"', "workers = 1",
                                                              f"batch_size = {SHARD_ROWS}"]), "--json")
    assert r.code == 0, r
    step = {s["name"]: s for s in r.json["steps"]}["validate export"]
    assert step["status"] == "passed", step
    local = cli("validate", tabular / "xgb.json", tmp_path / "out" / "model.onnx", "--data", tabular / "all.parquet",
                "--batch-sizes", str(SHARD_ROWS), "--json")
    assert local.code == 0, local
    ray_result = step["result"]
    assert ray_result["samples"] == ROWS and any("engine ray" in n for n in ray_result["notes"])
    ray_outputs = {o["name"]: o for o in ray_result["outputs"]}
    for o in local.json["outputs"]:
        assert ray_outputs[o["name"]]["max_abs"] == o["max_abs"]
        assert ray_outputs[o["name"]]["mean_abs"] == o["mean_abs"]


def test_pipeline_refuses_a_folder_of_shards_that_quantize_would_read_as_one_file(cli, tabular, tmp_path):
    cfg = tmp_path / "onnxkit.toml"
    cfg.write_text("\n".join([
        "[source]", f'path = "{(tabular / "xgb.json").as_posix()}"',
        "[output]", f'dir = "{(tmp_path / "out").as_posix()}"',
        "[validate]", 'engine = "ray"', f'data = "{(tabular / "shards").as_posix()}"',
        "[optimize]", "enabled = false",
        "[bench]", "enabled = false",
    ]) + "\n")
    r = cli("pipeline", cfg)
    assert r.code == 2, r
    assert "validate.data is a folder of shards, but quantize read(s) it as one data file" in r.stderr, r
    assert not (tmp_path / "out").exists()


def _kill_first(title: str, killed: list, stop) -> None:
    """Kill the first process whose title shows it running ``title`` (Ray names its workers
    after the task they run)."""
    import os
    import signal
    from pathlib import Path

    while not stop.is_set() and not killed:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title in cmd:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
                return
        stop.wait(0.2)


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_and_doubles_no_row(cli, tabular, ray_local):
    import threading

    d = tabular
    base = ["validate", d / "xgb.json", d / "xgb.onnx", "--data", d / "shards", "--engine", "ray", "--workers", "2",
            "--batch-size", "20", "--json"]
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first, args=("OnnxCompareActor.compare", killed, stop), daemon=True)
    killer.start()
    r = cli(*base)
    stop.set()
    killer.join()
    assert killed, "no compare task was seen running: nothing was killed"
    assert r.code == 0, r
    doc = r.json
    assert doc["samples"] == ROWS
    assert any("retried after 1 actor(s) died" in n for n in doc["notes"]), doc["notes"]
    calm = cli(*base[:-3], "--batch-size", "750", "--json")  # undisturbed, other cuts: the same figures
    assert calm.code == 0, calm
    for a, b in zip(doc["outputs"], calm.json["outputs"]):
        assert (a["elements"], a["max_abs"], a["mean_abs"], a["out_of_tol"]) == (b["elements"], b["max_abs"], b["mean_abs"], b["out_of_tol"])
