"""The ``web`` target: onnxruntime-web's WebAssembly kernels (what a browser runs with the
``wasm`` backend), driven by Node.js through a small script shipped with onnxkit.

Setup is one step, ``onnxkit targets --setup web``: npm installs onnxruntime-web into
onnxkit's cache folder (``$ONNXKIT_CACHE`` or ``~/.cache/onnxkit``, sub-folder ``web``),
without running package install scripts. Nothing is fetched when the target runs. Inputs go
to the script as raw files next to a JSON description; outputs come back the same way."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from onnxkit.errors import EnvironmentProblem
from onnxkit.results import Result, Table
from onnxkit.runtime.targets_browser import ENV_BROWSER, NODE_ASKED, find_browser
from onnxkit.runtime.targets_common import TIMED_RUNS, UNAVAILABLE, reply

ORT_WEB_VERSION = "1.30.0"  # the newest onnxruntime-web on npm when this target was written
SCRIPT = Path(__file__).with_name("web") / "run_model.mjs"
_RUN_TIMEOUT_S = 600
_OUT_FILE = re.compile(r"^out_\d{1,6}_\d{1,6}\.bin$")


def web_dir() -> Path:
    from onnxkit.runtime.providers import _cache_dir

    return _cache_dir() / "web"


def package_dir() -> Path:
    return web_dir() / "node_modules" / "onnxruntime-web"


def availability() -> str | None:
    browser, why_not = find_browser()
    if browser is None and os.environ.get(ENV_BROWSER) and why_not != NODE_ASKED:
        return f"${ENV_BROWSER}: {why_not}"
    if browser is None and shutil.which("node") is None:
        return ("neither Chromium nor Node.js is installed (the web target runs onnxruntime-web in headless Chromium, "
                "or under node; e.g. apt install chromium, or nodejs npm)")
    if not (package_dir() / "package.json").is_file():
        return f"onnxruntime-web is not set up in {web_dir()}: run onnxkit targets --setup web"
    return None


@dataclass
class SetupResult(Result):
    command: str = "targets --setup web"
    folder: str = ""
    package: str = ""
    version: str = ""
    steps: list[str] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [Table("web target setup", ["property", "value"],
                      [["folder", self.folder], ["package", f"{self.package} {self.version}"]])]


def setup() -> SetupResult:
    """npm-install onnxruntime-web into the cache folder (exit 3 if node/npm are missing or npm fails)."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        raise EnvironmentProblem("the web target needs Node.js and npm", hint="install them (e.g. apt install nodejs npm)")
    dest = web_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if not (dest / "package.json").exists():
            (dest / "package.json").write_text('{"private": true, "description": "onnxkit web target"}\n')
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create {dest}: {exc.strerror or exc}") from None
    cmd = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--save-exact",
           f"onnxruntime-web@{ORT_WEB_VERSION}"]
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem("npm install onnxruntime-web took longer than 15 minutes") from None
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-1:] or ["no output"]
        raise EnvironmentProblem(f"npm install onnxruntime-web failed: {tail[0][:300]}")
    version = json.loads((package_dir() / "package.json").read_text()).get("version", "")
    return SetupResult(folder=str(dest), package="onnxruntime-web", version=version)


def _write_feeds(job: Path, feeds: list[dict]) -> list[dict]:
    import numpy as np

    described = []
    for i, feed in enumerate(feeds):
        entry = {}
        for j, (name, arr) in enumerate(feed.items()):
            arr = np.ascontiguousarray(arr)
            file = f"in_{i}_{j}.bin"
            if arr.dtype.kind in "USO":  # strings go as a JSON list (onnxruntime-web's string tensors)
                dtype = "string"
                (job / file).write_text(json.dumps([_text(v) for v in arr.ravel().tolist()]), encoding="utf-8")
            else:
                dtype = "bool" if arr.dtype == np.bool_ else arr.dtype.name
                (job / file).write_bytes(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
            entry[name] = {"dtype": dtype, "shape": list(arr.shape), "file": file}
        described.append(entry)
    return described


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_outputs(job: Path, metas: list[dict]) -> list[dict]:
    import numpy as np

    outs = []
    for meta in metas:
        one = {}
        for name, m in meta.items():
            if not isinstance(m.get("file"), str) or not _OUT_FILE.fullmatch(m["file"]):
                # the name comes back from the page: only the runners' own out_<feed>_<index>.bin
                raise ValueError(f"output {name}: {m.get('file')!r} is not an output file of this run")
            if m["dtype"] == "string":
                values = json.loads((job / m["file"]).read_text(encoding="utf-8"))
                one[name] = np.array(values, dtype=object).reshape(m["shape"])
                continue
            dtype = np.bool_ if m["dtype"] == "bool" else np.dtype(m["dtype"]).newbyteorder("<")
            one[name] = np.frombuffer((job / m["file"]).read_bytes(), dtype=dtype).reshape(m["shape"]).copy()
        outs.append(one)
    return outs


def run(model_path: str, feeds: list[dict], precision: str | None, options: dict) -> dict:
    notes = [f"--precision {precision} ignored: the wasm backend runs the graph's own types"] if precision not in (None, "f32") else []
    job = Path(tempfile.mkdtemp(prefix="onnxkit-web-"))
    try:
        from onnxkit.runtime.targets_common import external_files

        src = Path(model_path).resolve()
        external = [{"path": loc, "file": str(src.parent / loc)} for loc in external_files(src)]
        spec = {"model": str(src), "external": external, "feeds": _write_feeds(job, feeds), "timed_runs": TIMED_RUNS,
                "memory_mb": options.get("memory_mb")}
        named = bool(options.get("browser") or os.environ.get(ENV_BROWSER))
        browser, why_not = find_browser(options.get("browser"))
        if browser is not None:
            got = _run_browser(browser, src, external, job, spec, notes)
            if got["stage"] != "start":
                return got
            if named or shutil.which("node") is None:
                # it never asked for the page: this machine cannot run the target, the model played no part
                return got | {"stage": UNAVAILABLE}
            # A Chromium found on PATH that cannot start here (no page was ever requested) says
            # nothing about the model: run the same kernels under Node.js, and say why.
            why_not = got["error"]
        if why_not != NODE_ASKED and named:
            # The user named a browser: running under Node.js instead would answer another question.
            return reply(stage="load", error=why_not, notes=notes, extra={"runtime_kind": "chromium"})
        if shutil.which("node") is None:
            return reply(stage="load", error=f"{why_not}, and Node.js is not installed", notes=notes)
        notes.append(f"ran under Node.js, not in a browser: {why_not}")
        (job / "job.json").write_text(json.dumps(spec))
        stopped, stderr, code = _run_node(job, options.get("memory_mb"))
        if stopped:
            return reply(stage="run", error=stopped, notes=notes)
        result_file = job / "result.json"
        if not result_file.is_file():
            tail = [ln for ln in stderr.splitlines() if ln.strip()][-1:] or [f"exit code {code}"]
            return reply(stage="load", error="the onnxruntime-web script ended without a result: " + tail[0][:300], notes=notes)
        got = json.loads(result_file.read_text())
        extra = {"runtime": f"onnxruntime-web {got.get('version') or ''} (wasm) under node".replace("  ", " "),
                 "runtime_kind": "node"}
        if got["error"]:
            from onnxkit.runtime.targets_common import ort_unsupported

            return reply(stage=got["stage"], error=got["error"], unsupported=ort_unsupported(got["error"]),
                         notes=notes, extra=extra)
        return reply(outputs=_read_outputs(job, got["outputs"]), precision="f32", latency_ms=got["latency_ms"],
                     notes=notes, extra=extra)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _run_node(job: Path, memory_mb: int | None) -> tuple[str | None, str, int | None]:
    """Run the Node.js script on ``job``: (why it was stopped or None, its stderr, exit code).
    Node reserves far more address space than it uses, so its memory is bounded by watching
    its resident size (``memory_mb``), not by RLIMIT_AS."""
    import time

    from onnxkit.runtime.targets_browser import _die_with_parent, _stop
    from onnxkit.runtime.targets_common import over_memory

    err_file = job / "node.stderr"
    with open(err_file, "wb") as err:
        proc = subprocess.Popen(["node", str(SCRIPT), str(package_dir()), str(job)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                preexec_fn=_die_with_parent)
    deadline = time.monotonic() + _RUN_TIMEOUT_S
    stopped = None
    try:
        while proc.poll() is None:
            too_big = over_memory(proc, memory_mb)
            if too_big:
                stopped = f"onnxruntime-web under node {too_big}"
            elif time.monotonic() > deadline:
                stopped = f"onnxruntime-web took longer than {_RUN_TIMEOUT_S} s"
            if stopped:
                break
            time.sleep(0.1)
    finally:
        _stop(proc)
    return stopped, err_file.read_text(errors="replace"), proc.returncode


def _run_browser(browser: str, src: Path, external: list[dict], job: Path, spec: dict, notes: list[str]) -> dict:
    from onnxkit.runtime.targets_browser import run_in_browser
    from onnxkit.runtime.targets_common import ort_unsupported

    got = run_in_browser(browser, package_dir(), src, external, job, spec, memory_mb=spec.get("memory_mb"))
    agent = got.get("user_agent") or ""
    version = re.search(r"(?:HeadlessChrome|Chrome|Chromium)/([\d.]+)", agent)
    extra = {"runtime": f"onnxruntime-web {got.get('version') or ''} (wasm) in headless Chromium"
             f" {version.group(1) if version else ''}".replace("  ", " ").strip(),
             "runtime_kind": "chromium", "browser": browser}
    if got.get("error"):
        return reply(stage=got.get("stage") or "run", error=got["error"], unsupported=ort_unsupported(got["error"]),
                     notes=notes, extra=extra)
    try:
        outputs = _read_outputs(job, got["outputs"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return reply(stage="run", error=f"the page's outputs could not be read back: {exc}", notes=notes, extra=extra)
    return reply(outputs=outputs, precision="f32", latency_ms=got.get("latency_ms"), notes=notes, extra=extra)
