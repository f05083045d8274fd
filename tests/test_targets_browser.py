"""The ``web`` target in headless Chromium: a real browser run compared with ONNX Runtime CPU,
Node.js where asked, the page server that hands out only the files of the run, and a browser
that exits or hangs (killed, with its children, and reported)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _web_ready() -> bool:
    from onnxkit.runtime.targets_web import package_dir

    return (package_dir() / "dist" / "ort.wasm.min.mjs").is_file()


needs_cache = pytest.mark.skipif(not _web_ready(), reason="onnxruntime-web is not set up (onnxkit targets --setup web)")
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@pytest.fixture
def cnn(tmp_path) -> Path:
    """Conv + BatchNorm-free residual + Softmax: not the fixtures' CNN."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.3, "w")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32) * 0.3, "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv_a"),
        helper.make_node("Sigmoid", ["c"], ["s"], name="sig"),
        helper.make_node("Conv", ["s", "w2"], ["c2"], name="conv_b"),
        helper.make_node("Add", ["c", "c2"], ["r"], name="residual"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Softmax", ["f"], ["prob"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 4])], [w, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "residual.onnx"
    onnx.save(model, str(path))
    return path


def _browser_processes(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (a run's profile folder)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append(int(pid))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent (a container's init may never reap it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _profiles() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("onnxkit-browser-*")}


@needs_cache
@needs_chromium
def test_a_real_chromium_run_agrees_with_ort_cpu_and_leaves_nothing(cnn):
    before_bytes = cnn.read_bytes()
    profiles = _profiles()
    r = run_cli("targets", cnn, "--target", "web", "--browser", "chromium", "--json")
    assert r.code == 0, r
    web = next(t for t in r.json["targets"] if t["target"] == "web")
    assert web["status"] == "passed"
    assert web["details"]["runtime_kind"] == "chromium"
    assert "headless Chromium" in web["details"]["runtime"] and "onnxruntime-web" in web["details"]["runtime"]
    assert web["max_abs_diff"] <= 1e-4 and web["latency_ms"] > 0
    assert len(web["outputs"]) == 1 and web["outputs"][0]["name"] == "prob"
    assert cnn.read_bytes() == before_bytes
    assert _profiles() == profiles, "the browser's temporary profile was left behind"
    assert not _browser_processes("onnxkit-browser-"), "a browser process outlived the run"


@needs_cache
@needs_node
def test_browser_none_runs_under_node_and_says_so(cnn):
    r = run_cli("targets", cnn, "--target", "web", "--browser", "none", "--json")
    assert r.code == 0, r
    web = next(t for t in r.json["targets"] if t["target"] == "web")
    assert web["status"] == "passed" and web["details"]["runtime_kind"] == "node"
    assert any("ran under Node.js, not in a browser" in n for n in web["notes"])


def test_a_browser_that_is_not_there_is_exit_2_before_any_target(cnn, tmp_path):
    r = run_cli("targets", cnn, "--target", "web", "--browser", str(tmp_path / "no-such-browser"), "--json")
    assert r.code == 2, r
    assert "Error: --browser: browser" in r.stderr and "is not an executable file" in r.stderr
    assert r.stdout.strip() == "" or json.loads(r.stdout)["exit_code"] == 2


def _fake_browser(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-browser"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@needs_cache
def test_a_browser_that_exits_at_once_is_unavailable_with_its_message(cnn, tmp_path):
    """It never asked for the page: this machine cannot run the target (exit 3), the model is not at fault."""
    fake = _fake_browser(tmp_path, 'echo "cannot open display" >&2; exit 7')
    r = run_cli("targets", cnn, "--target", "web", "--browser", str(fake), "--json")
    assert r.code == 3, r
    web = next(t for t in r.json["targets"] if t["target"] == "web")
    assert web["status"] == "unavailable" and web["stage"] is None
    assert web["reason"] == "fake-browser exited with code 7 before the page answered: cannot open display"


@needs_cache
@needs_node
def test_a_chromium_on_path_that_cannot_start_falls_back_to_node_and_says_why(cnn, tmp_path, monkeypatch):
    """Not named by the user, and it never asked for the page: the model played no part."""
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = _fake_browser(folder, 'echo "Missing X server or $DISPLAY" >&2; exit 1')
    fake.rename(folder / "chromium")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ONNXKIT_BROWSER", raising=False)
    r = run_cli("targets", cnn, "--target", "web", "--json")
    assert r.code == 0, r
    web = next(t for t in r.json["targets"] if t["target"] == "web")
    assert web["status"] == "passed" and web["details"]["runtime_kind"] == "node"
    assert any(n.startswith("ran under Node.js, not in a browser: chromium exited with code 1 before the page answered: "
                            "Missing X server") for n in web["notes"]), web["notes"]


def test_a_hung_browser_is_killed_with_its_children_at_the_timeout(tmp_path):
    """The page never answers: the run stops at its timeout and kills the whole process group."""
    from onnxkit.runtime.targets_browser import run_in_browser

    pids = tmp_path / "pids"
    fake = _fake_browser(tmp_path, f'sleep 120 & echo $$ $! > "{pids}"; wait')
    package = tmp_path / "ort"
    (package / "dist").mkdir(parents=True)
    (package / "dist" / "ort.wasm.min.mjs").write_text("// not used\n")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    t0 = time.monotonic()
    got = run_in_browser(str(fake), package, model, [], tmp_path, {"feeds": [], "timed_runs": 1}, timeout_s=1.5)
    assert got["error"] == "the page did not answer in 1.5 s"
    assert time.monotonic() - t0 < 20
    for pid in map(int, pids.read_text().split()):
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.1)
        assert not _alive(pid), f"process {pid} of the browser outlived the timeout"


def test_the_page_server_hands_out_only_the_runs_files(tmp_path):
    """Under a secret prefix, a fixed list of names: no listing, no path outside it, no other POST."""
    import threading

    from onnxkit.runtime.targets_browser import _Server

    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model-bytes")
    job = tmp_path / "job"
    job.mkdir()
    server = _Server({"model.onnx": model, "job.json": b"{}"}, job, "/tok3n/")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"{base}/tok3n/model.onnx") as resp:
            assert resp.read() == b"model-bytes"
            assert resp.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        for path in ("/", "/tok3n/", "/model.onnx", "/tok3n/../secret.txt", f"/tok3n/{secret}", "/tok3n/secret.txt",
                     "/tok3n/%2e%2e/secret.txt", "/other/model.onnx"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{base}{path}")
            assert err.value.code == 404, path
        for path in ("/tok3n/out/../../evil.bin", "/tok3n/out/x.bin", "/tok3n/model.onnx", "/tok3n/out/out_0_0.bin/.."):
            req = urllib.request.Request(f"{base}{path}", data=b"zz", method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req)
            assert err.value.code == 400, path
        req = urllib.request.Request(f"{base}/tok3n/out/out_0_1.bin", data=b"\x01\x02", method="POST")
        urllib.request.urlopen(req).read()
        assert (job / "out_0_1.bin").read_bytes() == b"\x01\x02"
        assert sorted(p.name for p in job.iterdir()) == ["out_0_1.bin"]
        assert not server.answered.is_set()
        urllib.request.urlopen(urllib.request.Request(f"{base}/tok3n/result", data=b'{"stage": "ran"}', method="POST"))
        assert server.answered.is_set() and server.result == {"stage": "ran"}
    finally:
        server.shutdown()
        server.server_close()
    assert secret.read_text() == "private"


def test_pipeline_refuses_a_targets_browser_that_is_not_there(tmp_path):
    from tests.conftest import make_linear_onnx

    src = make_linear_onnx(tmp_path / "lin.onnx")
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[source]\npath = "{src.as_posix()}"\n[targets]\nrequire = ["web"]\nbrowser = "/no/such/chromium"\n')
    r = run_cli("pipeline", cfg)
    assert r.code == 2, r
    assert "p.toml:5: targets.browser: browser '/no/such/chromium' is not an executable file" in r.stderr
    assert not (tmp_path / "onnxkit-out").exists()


def test_killing_the_runner_kills_the_browser(tmp_path):
    """PR_SET_PDEATHSIG: the contained child that started the browser is SIGKILLed (its
    timeout), and the browser goes with it instead of living on."""
    import subprocess
    import sys

    pids = tmp_path / "pids"
    fake = _fake_browser(tmp_path, f'echo $$ > "{pids}"; exec sleep 120')
    code = (
        "import subprocess, sys\n"
        "from onnxkit.runtime.targets_browser import _die_with_parent\n"
        f"subprocess.Popen([{str(fake)!r}], start_new_session=True, preexec_fn=_die_with_parent)\n"
        "import time; time.sleep(120)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", code], env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])})
    try:
        for _ in range(100):
            if pids.exists() and pids.read_text().strip():
                break
            time.sleep(0.1)
        browser = int(pids.read_text())
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        for _ in range(50):
            if not _alive(browser):
                break
            time.sleep(0.1)
        assert not _alive(browser), "the browser outlived the process that started it"
    finally:
        runner.kill()
