"""Output names become .npz member names: a hostile name must not become a zip-slip member."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from onnxkit.foundation.npz_names import renaming_notes, safe_member_names
from tests.conftest import run_cli

from ._models import make_named_outputs_onnx

HOSTILE = ["../../evil", "a/b", "a_b", "..\\win", ".bashrc", "/etc/passwd", "c:drive", "nul\x00byte", "ok"]


def _is_safe(member: str) -> bool:
    stem = member.removesuffix(".npy")
    return (member.endswith(".npy") and not any(c in stem for c in "/\\\x00:") and ".." not in stem
            and not stem.startswith(".") and stem.strip() != "")


def test_member_names_are_safe_distinct_and_keep_safe_names():
    m = safe_member_names(HOSTILE)
    assert list(m) == HOSTILE
    assert all(_is_safe(s + ".npy") for s in m.values())
    assert len({s.lower() for s in m.values()}) == len(HOSTILE)
    assert m["ok"] == "ok" and m["a_b"] == "a_b"  # a safe name wins over a cleaned one that clashes with it
    assert m["a/b"] != "a_b"


@pytest.mark.parametrize("names", [["", "."], ["..", "..."], ["Y", "y"], ["x" * 300, "x" * 301]])
def test_degenerate_and_clashing_names(names):
    m = safe_member_names(names)
    assert all(_is_safe(s + ".npy") and len(s) <= 210 for s in m.values())
    assert len({s.lower() for s in m.values()}) == len(names)


def test_no_note_when_nothing_changes():
    assert renaming_notes(safe_member_names(["logits", "probabilities"])) == []


def test_run_writes_safe_members_and_says_so(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    model = make_named_outputs_onnx(folder / "named.onnx", HOSTILE)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    r = run_cli("run", model, "-o", folder / "out.npz", "--batch-size", "3", "--json")
    assert r.code == 0, r
    members = zipfile.ZipFile(folder / "out.npz").namelist()
    assert len(members) == len(HOSTILE) and all(_is_safe(m) for m in members), members
    assert "ok.npy" in members and "a_b.npy" in members
    note = " ".join(r.json["notes"])
    assert "renamed" in note and "'../../evil' -> '______evil'" in note
    # Unpacking it writes nothing outside the folder it is unpacked into.
    dest = folder / "unpacked"
    zipfile.ZipFile(folder / "out.npz").extractall(dest)
    assert sorted(p.name for p in tmp_path.rglob("*") if dest not in p.parents and p != dest) == sorted(before + ["out.npz"])
    loaded = np.load(folder / "out.npz")
    x = np.asarray(loaded["ok"])
    assert x.shape == (3, 2)
    for stem in safe_member_names(HOSTILE).values():
        np.testing.assert_array_equal(loaded[stem], x)  # every output is Identity(x)


def test_saved_reference_members_are_positions_not_model_names(tmp_path):
    """validate --save-outputs names .npz members by position: an output named ../../x would
    otherwise become a path for whoever unpacks the file; --load-outputs reads it back."""
    import zipfile

    import numpy as np

    from onnxkit.foundation.references import ReferenceWriter, load_references

    dest = tmp_path / "refs.npz"
    x = np.ones((2, 3), np.float32)
    with ReferenceWriter(dest, {"source": "s"}) as w:
        w.add("batch 1", {"../../in": x}, {"../../../etc/evil": x * 2, "ok": x * 3})
    members = zipfile.ZipFile(dest).namelist()
    assert not any(".." in m for m in members), members
    refs = load_references(dest)
    try:
        [(label, inputs, outputs)] = list(refs.batches())
        assert list(outputs) == ["../../../etc/evil", "ok"]
        np.testing.assert_array_equal(outputs["ok"], x * 3)
        np.testing.assert_array_equal(inputs["../../in"], x)
    finally:
        refs.close()
