"""TensorFlow's C++ import notices go to fd 2 before its log level applies; a quiet export must
still print nothing but onnxkit's own line, and real errors written to fd 2 must survive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_quiet_keras_export_has_clean_stderr(tmp_path):
    build = "import keras; m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)]); m.save('m.keras')"
    assert _run(build, tmp_path).returncode == 0
    proc = subprocess.run([sys.executable, "-m", "onnxkit", "export", "m.keras", "-o", "m.onnx", "-q"], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "oneDNN" not in proc.stdout and proc.stdout.startswith("PASSED export")


def test_filter_keeps_other_lines_and_everything_on_failure(tmp_path):
    code = (
        "import os, sys\n"
        "from onnxkit.frameworks.tf_audit import _filtered_fd2\n"
        "with _filtered_fd2():\n"
        "    os.write(2, b'I0000 00:00:1795773196.198598    6420 port.cc:153] noise\\n')\n"
        "    os.write(2, b'kept line\\n')\n"
        "try:\n"
        "    with _filtered_fd2():\n"
        "        os.write(2, b'I0000 00:00:1.0    1 port.cc:1] shown on failure\\n')\n"
        "        raise RuntimeError('boom')\n"
        "except RuntimeError:\n"
        "    pass\n"
    )
    proc = _run(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["kept line", "I0000 00:00:1.0    1 port.cc:1] shown on failure"]
