"""Image classifiers (ViT, DeiT, Swin, ResNet, ConvNeXt...) from a save_pretrained folder:
``pixel_values`` [batch, channels, height, width] -> ``logits``, Optimum's names. Inputs are
made by the folder's own image processor (preprocessor_config.json), so validation sees the
resize, crop and normalisation a user's pipeline applies."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.errors import InputError, UsageError
from onnxkit.foundation.spec import InputSpec
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions
from onnxkit.frameworks.hf_fw import HFSource, check_missing_weights, _first_line, _load_errors, _quiet_transformers, offline


class HFVisionSource(HFSource):
    def __init__(self, folder, task: str, trust: bool) -> None:  # noqa: D107 - HFSource's loads a tokenizer
        torch = require("torch", "torch")
        transformers = require("transformers", "transformers")
        self.framework_version = transformers.__version__
        self.folder = folder
        self.path = folder.root
        self.task = task
        self.notes: list[str] = []
        remote = bool(trust and folder.custom_code)
        with offline(), _quiet_transformers():
            try:
                self.model, info = transformers.AutoModelForImageClassification.from_pretrained(
                    str(folder.model_dir), local_files_only=True, trust_remote_code=remote,
                    use_safetensors=folder.weights == "safetensors", dtype=torch.float32, output_loading_info=True,
                )
                self.model.eval()
                self.processor = transformers.AutoImageProcessor.from_pretrained(
                    str(folder.model_dir), local_files_only=True, trust_remote_code=remote)
            except _load_errors() as exc:
                raise InputError(f"transformers cannot load {folder.root.name} for {task}: {_first_line(exc)}") from None
        check_missing_weights(folder, task, info)
        _eager_attention(self.model)
        dtype = folder.config.get("torch_dtype") or folder.config.get("dtype")
        if dtype and dtype != "float32":
            self.notes.append(f"the checkpoint is {dtype}; exported and validated in float32")
        self.input_names = ["pixel_values"]
        self.output_names = ["logits"]
        self.token_outputs = ()
        self.wrapper = _classifier_wrapper(self.model)
        probe = self.preprocess([np.zeros((32, 32, 3), np.uint8)])["pixel_values"]
        self.input_specs = [InputSpec("pixel_values", ("batch_size", *probe.shape[1:]), np.dtype(np.float32))]

    def tokenize(self, texts: list[str]) -> Feeds:
        raise UsageError(f"{self.folder.root.name} is an image model: it takes images, not text")

    def preprocess(self, images: list[np.ndarray]) -> Feeds:
        """The folder's image processor on HxWx3 uint8 RGB arrays."""
        try:
            with _quiet_transformers():
                enc = self.processor(images=list(images), return_tensors="np")
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"the image processor of {self.folder.root.name} rejects the images: {_first_line(exc)}") from None
        pixels = np.asarray(enc["pixel_values"], dtype=np.float32)
        if pixels.ndim != 4:
            raise InputError(f"the image processor of {self.folder.root.name} gave pixel_values of shape {pixels.shape}, "
                             "not [batch, channels, height, width]")
        return {"pixel_values": pixels}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(image_processor=type(self.processor).__name__)
        return d

    def export(self, options: LoadOptions) -> ExportOutcome:
        torch = require("torch", "torch")
        from onnxkit.frameworks.hf_decoder import rename_dims

        rng = np.random.default_rng(0)
        images = [rng.integers(0, 256, size=(40 + 9 * k, 48, 3), dtype=np.uint8) for k in range(2)]
        example = torch.from_numpy(self.preprocess(images)["pixel_values"])
        # Height and width stay as the processor makes them: position embeddings (ViT) are
        # sized for them, and the processor always resizes to them.
        model, opset = self._dynamo_export((example,), ({0: torch.export.Dim.DYNAMIC},), options)
        rename_dims(model, [("pixel_values", 0, "batch_size")])
        return ExportOutcome(model=model, exporter="torch.onnx (dynamo)", opset=opset, notes=list(self.notes))


def _eager_attention(model) -> None:
    """Swin's SDPA path does not survive torch.export with a dynamic batch (a transposed tensor
    gets viewed); eager attention is the same math. CNNs have no attention to choose."""
    try:
        model.set_attn_implementation("eager")
    except (ValueError, AttributeError, NotImplementedError):
        pass


def _classifier_wrapper(model):
    torch = require("torch", "torch")

    class Classifier(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return (self.inner(pixel_values=pixel_values, return_dict=True).logits,)

    return Classifier(model).eval()
