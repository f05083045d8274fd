"""ONNX Runtime's tools print on stdout and warn through loggers outside the onnxruntime tree;
onnxkit turns their failures into notes, so the raw lines stay out of the output unless
--verbose."""

from __future__ import annotations

import logging

from onnxkit.foundation.chatter import library_chatter


def _chatter() -> None:
    print("failed in shape inference <class 'TypeError'>")
    logging.getLogger("fusion_skiplayernorm").warning("symbolic shape inference disabled or failed.")


def test_quiet_by_default(capsys, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("onnxkit"), "level", logging.WARNING)
    with library_chatter():
        _chatter()
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    assert "symbolic shape inference" not in caplog.text
    logging.getLogger("fusion_skiplayernorm").warning("after the call")  # logging works again afterwards
    assert "after the call" in caplog.text


def test_verbose_keeps_the_lines_on_stderr(capsys, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("onnxkit"), "level", logging.DEBUG)
    with library_chatter():
        _chatter()
    out, err = capsys.readouterr()
    assert out == ""
    assert "failed in shape inference" in err and "symbolic shape inference" in caplog.text
