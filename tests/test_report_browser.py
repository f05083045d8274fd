"""The HTML report as a reader sees it: a real pipeline run's report loaded in headless
Chromium, where every plot must decode to an image of a readable size. Skipped where no
Chromium is installed (Debian: `apt-get install chromium`)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_cli

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Written into a copy of the report: after onload, each image's decode state becomes an
# attribute that --dump-dom prints. The report itself carries no script.
PROBE = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    img.setAttribute("data-probe", `${img.complete} ${img.naturalWidth} ${img.naturalHeight}`);
  }
  document.body.setAttribute("data-probed", String(document.images.length));
});
</script>"""


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory, linear_onnx) -> Path:
    """One real pipeline run on an ONNX source (no framework import: fast)."""
    pytest.importorskip("matplotlib")
    folder = tmp_path_factory.mktemp("browser")
    config = folder / "onnxkit.toml"
    config.write_text("\n".join([
        "[source]", f'path = "{linear_onnx.as_posix()}"',
        "[bench]", "batch_sizes = [1, 8]", "iterations = 5", "warmup = 1",
    ]) + "\n")
    r = run_cli("pipeline", config, "--json")
    assert r.code == 0, r
    return Path(r.json["reports"]["html"])


def test_every_plot_decodes_in_chromium(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    page = report.read_text()
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 3, "error, latency and size plots"
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    before = report.read_bytes()
    r = _headless(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    dom = r.stdout
    assert 'data-probed="3"' in dom, (r.returncode, r.stderr[-2000:])
    probes = re.findall(r'data-probe="(\w+) (\d+) (\d+)"', dom)
    assert len(probes) == 3
    for complete, width, height in probes:
        # Drawn at 100 dpi, 5-12 inches wide and 3-4 high: a plot a reader can read.
        assert complete == "true" and 400 <= int(width) <= 1600 and 250 <= int(height) <= 600, probes
    assert report.read_bytes() == before  # the browser check reads a copy


def test_report_screenshot_renders(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    from PIL import Image

    shot = tmp_path / "report.png"
    r = _headless(browser, tmp_path / "profile", "--hide-scrollbars", "--window-size=1200,2400",
                  f"--screenshot={shot}", report.as_uri())
    assert shot.exists(), (r.returncode, r.stderr[-2000:])
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 2400)
    # A blank page is one colour; a rendered report has text, tables and plots.
    assert len(img.getcolors(maxcolors=256 * 256) or range(257)) > 16


def test_embedded_plots_decode_without_a_browser(report):
    from PIL import Image

    for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', report.read_text()):
        img = Image.open(io.BytesIO(base64.b64decode(data)))
        img.load()
        assert 400 <= img.width <= 1600 and 250 <= img.height <= 600
