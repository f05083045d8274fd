"""The ``web`` target in a real browser: onnxruntime-web (from the same npm cache folder the
Node.js runner uses) inside headless Chromium, on a page served from 127.0.0.1.

The server answers only a fixed list of files under a per-run secret path (the page, its
script, onnxruntime-web's wasm build, the model, its external data and the inputs) and takes
two kinds of POST from the page: each output's raw bytes, then the result. Nothing else on the
disk is reachable through it, there is no directory listing, and it is bound to the loopback
interface only. The browser runs with a fresh profile in a temporary folder, in its own process
group, and is killed when the page has answered, when it times out, and when the process that
started it dies (``PR_SET_PDEATHSIG``)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from onnxkit.runtime.targets_common import over_memory

ENV_BROWSER = "ONNXKIT_BROWSER"  # a path, or "none" to run the web target under Node.js
NODE_ASKED = "browser none: Node.js was asked for"
PAGE_DIR = Path(__file__).with_name("web")
PAGE_TIMEOUT_S = 300.0
# Outputs come back as POST bodies; a model cannot make the page send more than this in one.
MAX_POST_BYTES = 4 << 30
_OUT_FILE = re.compile(r"^out_\d{1,6}_\d{1,6}\.bin$")
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
_MIME = {".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript",
         ".wasm": "application/wasm", ".json": "application/json"}


def find_browser(explicit: str | None = None) -> tuple[str | None, str | None]:
    """(the browser to run, why none) from ``explicit``, else $ONNXKIT_BROWSER, else the first
    Chromium on PATH. ``none`` asks for Node.js; a path that is not an executable is an error
    the caller reports rather than silently running somewhere else."""
    wanted = explicit or os.environ.get(ENV_BROWSER)
    if wanted:
        if wanted.lower() == "none":
            return None, NODE_ASKED
        found = shutil.which(wanted)
        if found is None:
            return None, f"browser {wanted!r} is not an executable file"
        return found, None
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found, None
    return None, "no Chromium on PATH"


def browser_option(value: str | None) -> str | None:
    """``--browser`` checked before any target runs: a path that is not a browser is bad
    usage (exit 2), not a web target that silently runs under Node.js instead."""
    if value is None:
        return None
    from onnxkit.errors import UsageError

    found, why_not = find_browser(value)
    if found is None and value.lower() != "none":
        raise UsageError(f"--browser: {why_not}")
    return found or "none"


def _ort_files(dist: Path) -> dict[str, Path]:
    """onnxruntime-web's wasm build: the ES module the page imports and the files it loads
    beside itself (only those, by name; nothing under dist's sub-folders)."""
    out = {}
    for p in dist.iterdir():
        if p.is_file() and re.match(r"^ort(\.wasm\.min\.mjs|-wasm-simd-threaded\.(mjs|wasm))$", p.name):
            out[f"ort/{p.name}"] = p
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, Path | bytes], job: Path, prefix: str) -> None:
        self.files, self.job, self.prefix = files, job, prefix
        self.result: dict | None = None
        self.answered = threading.Event()
        self.requested = False  # the browser asked for anything at all
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # the page's requests are not the user's business

    def _name(self) -> str | None:
        path = self.path.split("?", 1)[0]
        return path[len(self.server.prefix):] if path.startswith(self.server.prefix) else None

    def _send(self, code: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        # Cross-origin isolation: without it the page's clock is coarsened to 0.1 ms.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requested = True
        name = self._name()
        item = self.server.files.get(name) if name is not None else None
        if item is None:
            self._send(404)
            return
        body = item if isinstance(item, bytes) else item.read_bytes()
        self._send(200, body, _MIME.get(Path(name).suffix, "application/octet-stream"))

    def do_POST(self) -> None:  # noqa: N802
        name = self._name()
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if name is None or length < 0 or length > MAX_POST_BYTES or not (name == "result" or (
                name.startswith("out/") and _OUT_FILE.match(name[4:]))):
            self._send(400)
            return
        if name == "result":
            try:
                self.server.result = json.loads(self.rfile.read(length))
            except ValueError:
                self.server.result = {"stage": "run", "error": "the page posted a result that is not JSON", "outputs": []}
            self.server.answered.set()
            self._send(200)
            return
        with open(self.server.job / name[4:], "wb") as fh:
            left = length
            while left:
                chunk = self.rfile.read(min(left, 1 << 20))
                if not chunk:
                    break
                fh.write(chunk)
                left -= len(chunk)
        self._send(200)


def _die_with_parent() -> None:
    """In the browser's process, before exec: SIGKILL it when the process that started it
    dies, so a killed contained child leaves no browser behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _browser_command(browser: str, profile: Path, url: str) -> list[str]:
    cmd = [browser, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
           "--disable-extensions", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-default-apps", "--mute-audio", "--no-proxy-server",
           f"--user-data-dir={profile}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # Chromium refuses to start as root with its sandbox; the model already runs in a
        # contained child process of onnxkit's own.
        cmd.append("--no-sandbox")
    return [*cmd, url]


def _stop(proc: subprocess.Popen) -> None:
    """Kill the browser and every process it started (renderer, GPU, zygote)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# Chromium's zygote and singleton sockets live under $TMPDIR, and a Unix socket's path must fit
# in 108 bytes: past about 60 bytes of temporary folder it aborts at start-up.
_MAX_TEMP_ROOT = 40


def _short_temp_root() -> str | None:
    root = tempfile.gettempdir()
    if len(root) <= _MAX_TEMP_ROOT:
        return None
    return "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None


def run_in_browser(browser: str, package: Path, model: Path, external: list[dict], job: Path, spec: dict,
                   *, timeout_s: float = PAGE_TIMEOUT_S, memory_mb: int | None = None) -> dict:
    """Serve the page, run ``browser`` headless on it, and return the page's result
    (``{"stage", "error", "outputs", "latency_ms", "version", "user_agent"}``); the outputs'
    bytes are in ``job``. A browser that exits (stage ``start`` when it never asked for the
    page), a page that does not answer in ``timeout_s``, or a browser whose processes hold more
    than ``memory_mb`` resident, is a result with an ``error``."""
    prefix = f"/{secrets.token_urlsafe(18)}/"
    files: dict[str, Path | bytes] = {"index.html": PAGE_DIR / "page.html", "page.mjs": PAGE_DIR / "page.mjs",
                                      "job.mjs": PAGE_DIR / "job.mjs",
                                      "model.onnx": model, **_ort_files(package / "dist")}
    page_job = {"feeds": spec["feeds"], "timed_runs": spec["timed_runs"], "external": []}
    for i, e in enumerate(external):
        files[f"ext/{i}"] = Path(e["file"])
        page_job["external"].append({"path": e["path"], "url": f"ext/{i}"})
    for feed in spec["feeds"]:
        for meta in feed.values():
            files[f"in/{meta['file']}"] = job / meta["file"]
    files["job.json"] = json.dumps(page_job).encode()
    if "ort/ort.wasm.min.mjs" not in files:
        return {"stage": "load", "error": f"{package / 'dist'} has no ort.wasm.min.mjs: run onnxkit targets --setup web",
                "outputs": []}
    server = _Server(files, job, prefix)
    thread = threading.Thread(target=server.serve_forever, name="onnxkit-web-page", daemon=True)
    thread.start()
    profile = Path(tempfile.mkdtemp(prefix="onnxkit-browser-", dir=_short_temp_root()))
    # Chromium's own temporary files (its singleton socket's folder) go inside the profile
    # folder: it is SIGKILLed, so it never removes them itself, and the folder is removed below.
    env = {**os.environ, "TMPDIR": str(profile)}
    url = f"http://127.0.0.1:{server.server_address[1]}{prefix}index.html"
    log = profile / "stderr.log"  # a file, not a pipe: a chatty browser must not block on a full pipe
    proc = None
    try:
        try:
            with open(log, "wb") as err:
                proc = subprocess.Popen(_browser_command(browser, profile / "profile", url), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                                        preexec_fn=_die_with_parent, env=env)
        except OSError as exc:
            return {"stage": "start", "error": f"cannot start {browser}: {exc.strerror or exc}", "outputs": []}
        deadline = time.monotonic() + timeout_s
        while not server.answered.wait(0.2):
            if proc.poll() is not None:
                tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
                # "start": it never asked for the page, so the model played no part in its exit
                return {"stage": "load" if server.requested else "start", "error": f"{Path(browser).name} exited with code {proc.returncode} before the "
                        "page answered" + (f": {tail[0][:300]}" if tail else ""), "outputs": []}
            if time.monotonic() > deadline:
                return {"stage": "run", "error": f"the page did not answer in {timeout_s:g} s", "outputs": []}
            too_big = over_memory(proc, memory_mb)
            if too_big:
                return {"stage": "run", "error": f"{Path(browser).name} {too_big}", "outputs": []}
        return server.result or {"stage": "run", "error": "the page posted no result", "outputs": []}
    finally:
        if proc is not None:
            _stop(proc)
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile, ignore_errors=True)
