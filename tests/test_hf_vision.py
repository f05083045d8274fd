"""image-classification: ViT and ResNet folders export pixel_values -> logits, validated on
inputs their own image processor makes from built-in images or the user's image files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_hf_folders import snapshot

pytest.importorskip("transformers")
pytest.importorskip("PIL")

LABELS = {i: f"class_{i}" for i in range(5)}


def _labels() -> dict:
    return {"id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()}}


def _pil_processor(transformers, name: str, **kwargs):
    # transformers 5 falls back to the PIL processors without torchvision; ask for them directly.
    cls = getattr(transformers, f"{name}Pil", None) or getattr(transformers, name)
    return cls(**kwargs)


def tiny_vit(dest: Path) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, **_labels())
    transformers.ViTForImageClassification(cfg).eval().save_pretrained(str(dest))
    _pil_processor(transformers, "ViTImageProcessor", size={"height": 32, "width": 32}).save_pretrained(str(dest))
    return dest


def tiny_resnet(dest: Path) -> Path:
    """A CNN whose processor resizes the short side and centre-crops (ConvNeXt's processor)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", **_labels())
    transformers.ResNetForImageClassification(cfg).eval().save_pretrained(str(dest))
    _pil_processor(transformers, "ConvNextImageProcessor", size={"shortest_edge": 64}, crop_pct=0.875).save_pretrained(str(dest))
    return dest


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return tiny_vit(tmp_path_factory.mktemp("vis") / "vit")


def _write_images(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (50 + 10 * i, 70, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(folder / "gray.jpg")  # converted to RGB
    (folder / "readme.txt").write_text("not an image; skipped by suffix")
    return folder


@pytest.mark.slow
def test_vit_exports_pixel_values_to_logits(cli, vit, tmp_path):
    import onnx
    import onnxruntime as ort
    import torch
    import transformers
    from PIL import Image

    before = snapshot(vit)
    out = tmp_path / "out"
    r = cli("export", vit, "-o", out, "--json")
    assert r.code == 0, r
    m = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in m.graph.input] == ["pixel_values"] and [o.name for o in m.graph.output] == ["logits"]
    assert r.json["inputs"][0]["shape"] == ["batch_size", 3, 32, 32]
    v = r.json["validation"]
    assert v["passed"] is True and v["samples"] == 6  # 5 built-in images together, then the first alone
    assert any("image processor" in n for n in v["notes"])
    assert (out / "preprocessor_config.json").read_bytes() == (vit / "preprocessor_config.json").read_bytes()
    assert snapshot(vit) == before

    # Independently: the copied processor and the ONNX file against transformers on a new image.
    img = Image.fromarray(np.random.default_rng(5).integers(0, 256, (77, 41, 3), dtype=np.uint8))
    proc = transformers.AutoImageProcessor.from_pretrained(str(out))
    pixels = proc(images=[img], return_tensors="np")["pixel_values"].astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx")).run(["logits"], {"pixel_values": pixels})[0]
    with torch.no_grad():
        want = transformers.AutoModelForImageClassification.from_pretrained(str(vit)).eval()(
            pixel_values=torch.from_numpy(pixels)).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_resnet_validates_on_a_folder_of_images(cli, tmp_path):
    src = tiny_resnet(tmp_path / "resnet")
    images = _write_images(tmp_path / "images", 3)
    before = snapshot(images)
    r = cli("export", src, "-o", tmp_path / "out", "--data", images, "--json")
    assert r.code == 0, r
    v = r.json["validation"]
    assert v["samples"] == 5 and v["input_sets"] == ["4 images", "0.png alone"]
    assert r.json["inputs"][0]["shape"] == ["batch_size", 3, 64, 64]
    assert snapshot(images) == before


@pytest.mark.slow
def test_perturbed_classifier_fails_validation(cli, vit, tmp_path):
    import onnx
    from onnx import numpy_helper

    out = tmp_path / "out"
    assert cli("export", vit, "-o", out, "--no-validate").code == 0
    model = onnx.load(str(out / "model.onnx"))
    w = next(t for t in model.graph.initializer if list(t.dims) == [32, 64])
    arr = numpy_helper.to_array(w) + np.random.default_rng(0).normal(0, 0.5, size=(32, 64)).astype(np.float32)
    w.CopyFrom(numpy_helper.from_array(arr, w.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    r = cli("validate", vit, bad, "--json")
    assert r.code == 1, r
    assert r.json["passed"] is False


def _refused(cli, src, tmp_path, *args, code, message):
    before = snapshot(src)
    out = tmp_path / "out"
    r = cli("export", src, "-o", out, *args)
    assert r.code == code and message in r.stderr, r
    assert not out.exists()
    assert snapshot(src) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".onnxkit")]


def test_text_on_an_image_model_is_usage_error(cli, vit, tmp_path):
    _refused(cli, vit, tmp_path, "--text", "a cat", code=2, message="--text does not apply to an image model")


def test_data_that_is_not_an_image_is_bad_input(cli, vit, tmp_path):
    bad = tmp_path / "cat.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n then garbage")
    _refused(cli, vit, tmp_path, "--data", bad, code=2, message="is not an image PIL can read")
    assert bad.read_bytes() == b"\x89PNG\r\n\x1a\n then garbage"


def test_folder_without_images_is_bad_input(cli, vit, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    _refused(cli, vit, tmp_path, "--data", empty, code=2, message="no image files")


def test_missing_image_processor_is_bad_input(cli, vit, tmp_path):
    src = tmp_path / "noproc"
    shutil.copytree(vit, src)
    (src / "preprocessor_config.json").unlink()
    _refused(cli, src, tmp_path, code=2, message="has no preprocessor_config.json")


def test_processor_with_custom_code_is_refused(cli, vit, tmp_path):
    src = tmp_path / "custom"
    shutil.copytree(vit, src)
    cfg = json.loads((src / "preprocessor_config.json").read_text())
    cfg["auto_map"] = {"AutoImageProcessor": "processing_evil.EvilProcessor"}
    (src / "preprocessor_config.json").write_text(json.dumps(cfg))
    _refused(cli, src, tmp_path, code=5, message="auto_map in preprocessor_config.json")


def test_data_on_a_text_model_is_usage_error(cli, tmp_path):
    from test_hf_folders import tiny_bert

    src = tiny_bert(tmp_path / "bert")
    images = _write_images(tmp_path / "images", 1)
    _refused(cli, src, tmp_path, "--data", images, code=2, message="--data does not apply to a Hugging Face folder of a text model")


@pytest.mark.slow
def test_swin_exports_with_a_dynamic_batch(cli, tmp_path):
    """Swin's SDPA attention did not survive torch.export with a dynamic batch (exit 4)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                  window_size=4, **_labels())
    src = tmp_path / "swin"
    transformers.SwinForImageClassification(cfg).eval().save_pretrained(str(src))
    _pil_processor(transformers, "ViTImageProcessor", size={"height": 32, "width": 32}).save_pretrained(str(src))
    r = cli("export", src, "-o", tmp_path / "out", "--json")
    assert r.code == 0, r
    assert r.json["validation"]["outputs"][0]["top1_agreement"] == 1.0
