"""`-q` prints the verdict line and nothing else; hints name only options the command has;
tables keep their words whole and their speed-up columns point the same way."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_linear_onnx
from onnxkit.errors import UsageError


def _one_line(r) -> str:
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r
    assert r.stderr == "", r
    return lines[0]


# ---------------------------------------------------------------- -q

def test_quiet_inspect_prints_the_verdict_and_its_number(cli, linear_onnx):
    r = cli("inspect", linear_onnx, "-q")
    assert r.code == 0
    assert _one_line(r) == "PASSED inspect: 2 nodes, 15 parameters, checker ok"


def test_quiet_validate_pass_and_fail(cli, linear_onnx, tmp_path):
    same = make_linear_onnx(tmp_path / "same.onnx")
    r = cli("validate", linear_onnx, same, "-q")
    assert r.code == 0
    assert re.fullmatch(r"PASSED validate: max abs diff 0 \(atol \S+, rtol \S+\), \d+ samples", _one_line(r))

    other = make_linear_onnx(tmp_path / "other.onnx", seed=1)
    r = cli("validate", linear_onnx, other, "-q")
    assert r.code == 1
    line = _one_line(r)
    assert line.startswith("FAILED validate: max abs diff ") and "on y, 1 of 1 outputs out of tolerance" in line


def test_quiet_run_and_bench(cli, linear_onnx, tmp_path):
    out = tmp_path / "out.npz"
    r = cli("run", linear_onnx, "--batch-size", "4", "-o", out, "-q", "--trust")
    assert r.code == 0
    assert re.fullmatch(rf"PASSED run: 4 rows in 1 batch of 4 rows, \S+ rows/s, written to {re.escape(str(out))}", _one_line(r))
    r = cli("bench", linear_onnx, "--iterations", "20", "--batch-size", "1", "-q", "--trust")
    assert r.code == 0
    assert re.fullmatch(r"PASSED bench: linear p50 \d+\.\d{3} ms at batch 1", _one_line(r))


def test_quiet_with_json_is_still_one_json_document(cli, linear_onnx):
    import json

    r = cli("inspect", linear_onnx, "-q", "--json")
    assert r.code == 0 and json.loads(r.stdout)["verdict"] == "PASSED"


def test_quiet_on_the_root_reaches_the_command(cli, linear_onnx):
    r = cli("-q", "inspect", linear_onnx)
    assert _one_line(r).startswith("PASSED inspect: ")


# ---------------------------------------------------------------- hints

@pytest.fixture(scope="module")
def column_pipeline(tmp_path_factory) -> Path:
    """A scikit-learn pipeline that selects DataFrame columns by name (needs their types)."""
    pd = pytest.importorskip("pandas")
    sio = pytest.importorskip("skops.io")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 80, 40).astype(float), "city": rng.choice(["a", "b"], 40)})
    pipe = Pipeline([
        ("ct", ColumnTransformer([("num", StandardScaler(), ["age"]), ("cat", OneHotEncoder(), ["city"])])),
        ("lr", LogisticRegression()),
    ]).fit(df, (df.age > 40).astype(int))
    path = tmp_path_factory.mktemp("ct") / "columns.skops"
    sio.dump(pipe, path)
    return path


def _options_of(command: str) -> set[str]:
    from typer.main import get_command

    from onnxkit.cli import app as app_mod
    from onnxkit.cli.common import command_options

    app_mod._register()
    return set(command_options(get_command(app_mod.app), [command]))


@pytest.mark.parametrize("argv", [
    ["validate", "{src}", "{model}"],
    ["init", "{src}", "-o", "{tmp}/onnxkit.toml"],
    ["export", "{src}", "-o", "{tmp}/out.onnx"],
    ["bench", "{model}", "--vs", "{src}", "--iterations", "5"],
])
def test_every_option_a_hint_names_exists_on_that_command(cli, column_pipeline, linear_onnx, tmp_path, argv):
    before = column_pipeline.read_bytes()
    args = [a.format(src=column_pipeline, model=linear_onnx, tmp=tmp_path) for a in argv]
    r = cli(*args)
    assert r.code == 2, r
    assert r.stderr.startswith("Error: this pipeline selects table columns by name")
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", r.stderr))
    assert named <= _options_of(argv[0]), f"{argv[0]} has no {named - _options_of(argv[0])}"
    assert list(tmp_path.iterdir()) == [] and column_pipeline.read_bytes() == before


def test_validate_and_init_hint_at_input_not_sample(cli, column_pipeline, linear_onnx, tmp_path):
    for args in (["validate", column_pipeline, linear_onnx], ["init", column_pipeline, "-o", tmp_path / "c.toml"]):
        r = cli(*args)
        assert "--sample" not in r.stderr and "(hint: pass one --input NAME:[batch,1]:DTYPE per column)" in r.stderr
    r = cli("export", column_pipeline, "-o", tmp_path / "o.onnx")
    assert "pass --sample data.csv" in r.stderr  # export has --sample: it stays offered


def test_a_hint_naming_a_missing_option_is_dropped(cli, linear_onnx, monkeypatch):
    import onnxkit.operations.inspect as inspect_mod

    def refuse(*args, **kwargs):
        raise UsageError("cannot do that", hint="pass --frobnicate")

    monkeypatch.setattr(inspect_mod, "inspect_model", refuse)
    r = cli("inspect", linear_onnx)
    assert r.code == 2 and r.stderr == "Error: cannot do that\n"

    def refuse_with_real_option(*args, **kwargs):
        raise UsageError("cannot do that", hint="pass --trust if you vouch for it")

    monkeypatch.setattr(inspect_mod, "inspect_model", refuse_with_real_option)
    r = cli("inspect", linear_onnx)
    assert r.stderr == "Error: cannot do that (hint: pass --trust if you vouch for it)\n"


# ---------------------------------------------------------------- tables

def _render(table, width: int) -> str:
    from rich.console import Console

    from onnxkit.reports.render import fit

    buf = io.StringIO()
    console = Console(file=buf, width=width, highlight=False, soft_wrap=False, color_system=None)
    for rt in fit(console, table):
        console.print(rt)
    return buf.getvalue()


@pytest.mark.parametrize("width", [120, 140, 160])
def test_wide_tables_never_break_a_word(width):
    from onnxkit.results import Table

    cols = ["candidate", "settings", "size", "p50 ms @1", "p50 ms @8", "speed-up vs input @8",
            "speed-up vs source @8", "run-off ms", "cosine", "within budget", "status", "chosen"]
    rows = [[f"quantize-static-qdq-per-channel-{i}", "static, qdq, per-channel, entropy calibration, reduce_range",
             "12.34 MB", "0.1234", "0.9876", "1.23x", "2.34x", "0.987 (3.1% slower than best)", "0.99912",
             "yes", "skipped: ONNX Runtime could not run the fused graph (FusedMatMulNBits)", "<- chosen"]
            for i in range(3)]
    text = _render(Table("a wide table", cols, rows), width)
    flat = " ".join(line.strip("│┃ ") for line in text.splitlines())
    for word in {w for row in rows for cell in row for w in cell.split()} | {w for c in cols for w in c.split()}:
        assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), f"{word!r} was broken at width {width}"
    assert all(len(line) <= width for line in text.splitlines())
    assert flat


def test_short_cells_keep_their_line_when_there_is_room():
    from onnxkit.results import Table

    cols = ["candidate", "settings", "size", "p50 ms @1", "p50 ms @8", "speed-up vs input @8", "error (cosine)",
            "within budget", "status", "chosen"]
    rows = [["input", "float", "7.03 KB", "0.03717", "0.119", "1.00x", "0", "yes", "ok", "<- chosen"],
            ["dynamic-pc", "dynamic, per-channel", "5.61 KB", "0.08028", "0.3884", "0.31x", "1.472e-06", "yes", "ok", ""]]
    text = _render(Table("quantize --auto", cols, rows), 140)
    assert "<- chosen" in text and "7.03 KB" in text and "dynamic, per-channel" in text


def test_a_table_that_fits_stays_a_table():
    from onnxkit.results import Table

    text = _render(Table("small", ["a", "b"], [["1", "2"]]), 120)
    assert "┃ a" in text and "┃ b" in text


def test_bench_and_auto_speedups_point_the_same_way():
    from onnxkit.operations.autotune import AutoResult, Candidate
    from onnxkit.runtime.bench import BenchEntry, BenchResult, LatencyStats

    def stats(p50):
        return LatencyStats(iterations=10, mean_ms=p50, std_ms=0.0, min_ms=p50, p50_ms=p50, p90_ms=p50, p95_ms=p50,
                            p99_ms=p50, max_ms=p50, throughput=1000 / p50)

    bench = BenchResult(models=["a", "b"], batch_sizes=[1], iterations=10, entries=[
        BenchEntry("a", "onnx", 1, stats(2.0), ratio_to_first=1.0),
        BenchEntry("b", "onnx", 1, stats(1.0), ratio_to_first=0.5),  # b takes half the time: 2x faster
    ])
    table = bench.tables()[0]
    col = table.columns.index("speed-up vs first")
    assert [row[col] for row in table.rows] == ["1.00x", "2.00x"]

    auto = AutoResult(stage="optimize", batch_sizes=[8], decide_batch=8, candidates=[
        Candidate("input", p50_ms={8: 2.0}, speedup_vs_input={8: 1.0}, is_input=True),
        Candidate("fast", p50_ms={8: 1.0}, speedup_vs_input={8: 2.0}),
    ])
    table = auto.tables()[0]
    col = table.columns.index("speed-up vs input @8")
    assert [row[col] for row in table.rows] == ["1.00x", "2.00x"]


def test_only_the_clause_naming_a_missing_option_is_dropped(cli, linear_onnx, monkeypatch):
    import onnxkit.operations.inspect as inspect_mod

    def refuse(*args, **kwargs):
        raise UsageError("cannot do that", hint="upgrade onnxruntime; or pass --frobnicate")

    monkeypatch.setattr(inspect_mod, "inspect_model", refuse)
    r = cli("inspect", linear_onnx)
    assert r.stderr == "Error: cannot do that (hint: upgrade onnxruntime)\n"


def test_unavailable_provider_offers_fallback_only_where_it_exists(cli, linear_onnx, tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    other = make_linear_onnx(tmp_path / "other.onnx")
    r = cli("validate", linear_onnx, other, "--provider", "cuda")
    assert r.code == 3 and "install the onnxruntime package built for that provider" in r.stderr
    assert "--fallback" not in r.stderr
    r = cli("run", linear_onnx, "--provider", "cuda")
    assert r.code == 3 and "or pass --fallback" in r.stderr


def test_custom_domain_message_names_the_option_only_where_it_exists(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Magic", ["x"], ["y"], domain="acme.ops")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme.ops", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    r = cli("run", path)
    assert r.code == 2 and "this command cannot load custom operators (onnxkit inspect --custom-op-library can)" in r.stderr
    r = cli("inspect", path)
    assert r.code == 2 and "pass --custom-op-library with the library that implements it" in r.stderr
