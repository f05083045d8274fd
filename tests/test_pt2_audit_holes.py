"""Hostile .pt2 archives that a registry-only operator check and a zipfile-only audit let
through: file-writing operators, foreign namespaces, callable chains, and archives whose
members torch reads differently from Python's zipfile. Each must be refused with exit 5
before torch runs or deserializes anything, leaving no output and the inputs unchanged."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from onnxkit.frameworks.pt2_ops import target_refusal  # noqa: E402


class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.l(x)


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory) -> Path:
    ep = torch.export.export(_Linear().eval(), (torch.randn(2, 8),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    path = tmp_path_factory.mktemp("pt2") / "clean.pt2"
    torch.export.save(ep, str(path))
    return path


def _program_name(zf: zipfile.ZipFile) -> str:
    return next(n for n in zf.namelist() if n.endswith("models/model.json"))


def _with_nodes(src: Path, dest: Path, nodes: list[dict], tensors: tuple[str, ...] = ()) -> Path:
    """A copy of ``src`` whose graph starts with ``nodes`` (outputs named in ``tensors``)."""
    with zipfile.ZipFile(src) as zf:
        name = _program_name(zf)
        doc = json.loads(zf.read(name))
        graph = doc["graph_module"]["graph"]
        meta = {"dtype": 7, "sizes": [{"as_int": 4}], "requires_grad": False, "device": {"type": "cpu", "index": None},
                "strides": [{"as_int": 1}], "storage_offset": {"as_int": 0}, "layout": 7}
        for t in tensors:
            graph["tensor_values"][t] = meta
        graph["nodes"][0:0] = nodes
        with zipfile.ZipFile(dest, "w") as out:
            for info in zf.infolist():
                out.writestr(info.filename, json.dumps(doc) if info.filename == name else zf.read(info.filename))
    return dest


def _arg(name: str, value: dict) -> dict:
    return {"name": name, "arg": value, "kind": 1}


def _node(target: str, inputs: list[dict], out: str | None) -> dict:
    outputs = [{"as_tensor": {"name": out}}] if out else []
    return {"target": target, "inputs": inputs, "outputs": outputs, "metadata": {}, "is_hop_single_tensor_return": None, "name": out or "n"}


def _from_file(victim: Path) -> dict:
    return _node("torch.ops.aten.from_file.default", [
        _arg("filename", {"as_string": str(victim)}), _arg("shared", {"as_bool": True}), _arg("size", {"as_int": 4}),
    ], "ff")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _assert_refused(cli, pt2: Path, folder: Path, *needles: str) -> None:
    before = _snapshot(folder)
    r = cli("export", pt2, "-o", folder / "out.onnx")
    assert r.code == 5, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {pt2.name} would run code when loaded"), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert _snapshot(folder) == before  # no output, no leftovers, the victim untouched


def test_clean_program_still_exports(cli, clean_pt2, tmp_path):
    r = cli("export", clean_pt2, "-o", tmp_path / "ok.onnx", "-q")
    assert r.code == 0, r.stderr
    assert (tmp_path / "ok.onnx").is_file()


def test_from_file_then_fill_is_refused(cli, clean_pt2, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"data\n")
    fill = _node("torch.ops.aten.fill_.Scalar", [_arg("self", {"as_tensor": {"name": "ff"}}), _arg("value", {"as_float": 1.5})], "ff2")
    bad = _with_nodes(clean_pt2, tmp_path / "fromfile.pt2", [_from_file(victim), fill], ("ff", "ff2"))
    _assert_refused(cli, bad, tmp_path, "aten.from_file", "files, storage or global state")
    assert victim.read_bytes() == b"data\n"


def test_from_file_creating_a_file_then_copy_is_refused(cli, clean_pt2, tmp_path):
    victim = tmp_path / "created.bin"  # does not exist: shared=True would create it
    full = _node("torch.ops.aten.full.default", [_arg("size", {"as_ints": [4]}), _arg("fill_value", {"as_float": 1.5})], "src")
    copy = _node("torch.ops.aten.copy_.default", [_arg("self", {"as_tensor": {"name": "ff"}}), _arg("src", {"as_tensor": {"name": "src"}})], "ff2")
    bad = _with_nodes(clean_pt2, tmp_path / "copy.pt2", [_from_file(victim), full, copy], ("ff", "src", "ff2"))
    _assert_refused(cli, bad, tmp_path, "aten.from_file")
    assert not victim.exists()


@pytest.mark.parametrize(("target", "needle"), [
    ("torch.ops.aten.set_.source_Storage", "files, storage or global state"),
    ("torch.ops.aten.save.default", "files, storage or global state"),
    ("torch.ops.aten.manual_seed.default", "files, storage or global state"),
    ("torch.ops.aten.set_grad_enabled.default", "files, storage or global state"),
    ("torch.ops.profiler._record_function_enter.default", "namespace 'profiler'"),
    ("torch.ops._C.anything.default", "namespace '_C'"),
    ("torch.ops.higher_order.with_effects", "higher-order operator"),
    ("_operator.call", "not a registered operator"),
    ("_operator.methodcaller", "not a registered operator"),
    ("torch.save", "not a registered operator"),
])
def test_operators_outside_the_allow_list_are_refused(cli, clean_pt2, tmp_path, target, needle):
    bad = _with_nodes(clean_pt2, tmp_path / "op.pt2", [_node(target, [], "t0")], ("t0",))
    _assert_refused(cli, bad, tmp_path, target, needle)


def test_operator_passed_as_an_argument_is_audited(cli, clean_pt2, tmp_path):
    node = _node("torch.ops.aten.add.Tensor", [
        _arg("self", {"as_tensor": {"name": "x"}}), _arg("other", {"as_operator": "_operator.call"}),
    ], "t0")
    bad = _with_nodes(clean_pt2, tmp_path / "asop.pt2", [node], ("t0",))
    _assert_refused(cli, bad, tmp_path, "operator argument '_operator.call'")


def test_random_generator_object_is_refused(cli, clean_pt2, tmp_path):
    node = _node("torch.ops.aten.randn.generator", [
        _arg("size", {"as_ints": [4]}), _arg("generator", {"as_int": 1}),
    ], "t0")
    bad = _with_nodes(clean_pt2, tmp_path / "gen.pt2", [node], ("t0",))
    _assert_refused(cli, bad, tmp_path, "random generator")


@pytest.mark.parametrize("target", [
    "torch.ops.aten.add.Tensor", "torch.ops.aten.__and__.Tensor", "torch.ops.aten.fill_.Scalar",
    "torch.ops.aten.div.Tensor_mode", "torch.ops.aten.einsum.default", "torch.ops.aten.gelu.default",
    "torch.ops.aten._assert_scalar.default", "torch.ops.aten.sym_size.int", "torch.ops.aten.rand_like.default",
    "torch.ops.aten.sym_storage_offset.default", "torch.ops.higher_order.cond", "_operator.add", "torch.sym_max",
])
def test_compute_operators_are_accepted(target):
    assert target_refusal(target) is None


@pytest.mark.parametrize("target", [
    "torch.ops.aten.from_file.default", "torch.ops.aten._print.default", "torch.ops.aten.record_stream.default",
    "torch.ops.aten._cufft_set_plan_cache_max_size.default", "torch.ops.aten.set_.source_Storage_storage_offset",
    "torch.ops.aten.add.__call__", "torch.ops.aten.no_such_op.default", "_operator.attrgetter", "math.__dict__",
    "torch.ops.aten.set_",  # a bare packet: torch picks the overload from the arguments
])
def test_side_effect_operators_are_refused(target):
    assert target_refusal(target) is not None


# ---------------------------------------------------------------- archive members


def _hostile_program(clean: Path, marker: Path) -> tuple[str, bytes, bytes]:
    with zipfile.ZipFile(clean) as zf:
        name = _program_name(zf)
        orig = zf.read(name).decode()
    start = orig.index("Symbol('")
    sym = orig[start:orig.index(")", start) + 1]
    bad = orig.replace(sym, f"__import__('os').system('touch {marker}') or " + sym, 1)
    return name, bad.encode(), orig.encode()


def _rebuild(clean: Path, dest: Path, replace: dict[str, list[bytes]], extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(clean) as zf, zipfile.ZipFile(dest, "w") as out:
        for info in zf.infolist():
            for data in replace.get(info.filename, [zf.read(info.filename)]):
                out.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dest


def test_duplicated_program_member_is_refused(cli, clean_pt2, tmp_path):
    """The reviewer's construction: hostile copy first, clean copy second, padded until
    torch's reader returns the first copy."""
    marker = tmp_path / "PWNED"
    name, bad, orig = _hostile_program(clean_pt2, marker)
    prefix = name.split("/")[0]
    dest = tmp_path / "dup.pt2"
    for pad in range(8):
        _rebuild(clean_pt2, dest, {name: [bad, orig]}, {f"{prefix}/zz{k}": b"x" for k in range(pad)})
        if torch._C.PyTorchFileReader(str(dest)).get_record("models/model.json") == bad:
            break
    _assert_refused(cli, dest, tmp_path, "appears twice")
    assert not marker.exists()


def test_duplicated_weights_config_is_refused(cli, clean_pt2, tmp_path):
    with zipfile.ZipFile(clean_pt2) as zf:
        name = next(n for n in zf.namelist() if n.endswith("_weights_config.json"))
        orig = zf.read(name)
    doc = json.loads(orig)
    for meta in doc["config"].values():
        meta["use_pickle"] = True
    dest = _rebuild(clean_pt2, tmp_path / "dupw.pt2", {name: [json.dumps(doc).encode(), orig]})
    _assert_refused(cli, dest, tmp_path, "appears twice")


def test_duplicated_constants_config_is_refused(cli, clean_pt2, tmp_path):
    with zipfile.ZipFile(clean_pt2) as zf:
        name = next(n for n in zf.namelist() if n.endswith("_constants_config.json"))
        orig = zf.read(name)
    hostile = json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False}}}).encode()
    dest = _rebuild(clean_pt2, tmp_path / "dupc.pt2", {name: [hostile, orig]})
    _assert_refused(cli, dest, tmp_path, "appears twice")


def test_member_names_differing_only_in_case_are_refused(cli, clean_pt2, tmp_path):
    """torch's zip reader looks names up ignoring ASCII case: MODELS/model.json could be
    what it reads for models/model.json."""
    marker = tmp_path / "PWNED"
    name, bad, _ = _hostile_program(clean_pt2, marker)
    upper = name.replace("models/model.json", "MODELS/model.json")
    dest = _rebuild(clean_pt2, tmp_path / "case.pt2", {}, {upper: bad})
    _assert_refused(cli, dest, tmp_path, "appears twice")
    assert not marker.exists()


def test_program_under_models_with_another_extension_is_audited(cli, clean_pt2, tmp_path):
    """torch deserializes every member under models/, whatever its name ends with."""
    marker = tmp_path / "PWNED"
    name, bad, _ = _hostile_program(clean_pt2, marker)
    prefix = name.split("/")[0]
    extra = {name.replace("models/model.json", "models/zz.txt"): bad}  # read as the program "z"
    with zipfile.ZipFile(clean_pt2) as zf:
        for member in ("data/sample_inputs/model.pt", "data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            extra[f"{prefix}/{member.replace('model', 'z', 1) if 'sample' in member else member.replace('/model_', '/z_')}"] = zf.read(f"{prefix}/{member}")
    dest = _rebuild(clean_pt2, tmp_path / "other.pt2", {}, extra)
    _assert_refused(cli, dest, tmp_path, "size expression")
    assert not marker.exists()


def test_aotinductor_member_is_refused(cli, clean_pt2, tmp_path):
    with zipfile.ZipFile(clean_pt2) as zf:
        prefix = zf.namelist()[0].split("/")[0]
    dest = _rebuild(clean_pt2, tmp_path / "aoti.pt2", {}, {f"{prefix}/data/aotinductor/model/model.so": b"\x7fELF"})
    _assert_refused(cli, dest, tmp_path, "AOTInductor")
