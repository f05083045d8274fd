"""The pipeline config of a Hugging Face folder source: what ``onnxkit init`` writes for one
(``task``, no input specs: the tokenizer decides the inputs)."""

from __future__ import annotations

from typing import Any


def init_values(values: dict[str, dict[str, Any]], model: Any) -> None:
    """Adjust the starter config ``values`` that init_config built for the loaded folder ``model``."""
    check_pipeline_task(model.task)
    values["source"]["inputs"] = []
    values["source"]["task"] = model.task
    values["export"]["opset"] = None
    # The auto modes time single files; a folder gets the fixed passes and dynamic int8.
    values["optimize"]["mode"] = "fixed"
    values["quantize"]["mode"] = "dynamic"
    if model.task == "text-generation":
        # One batch size: a decoder is timed per token through its cache, one prompt at a time.
        values["bench"] = {"batch_sizes": [1], "threads": 1}


# The pipeline's steps read and time one model.onnx per folder; these tasks' folders hold others.
# An image model's steps would be checked and timed on text.
PIPELINE_UNSUPPORTED = {"text2text-generation": "an encoder-decoder folder (encoder_model.onnx + decoder files)",
                        "image-classification": "an image-classification folder"}


def check_pipeline_task(task: str | None) -> None:
    from onnxkit.errors import UsageError

    if task in PIPELINE_UNSUPPORTED:
        raise UsageError(f"onnxkit pipeline does not run {PIPELINE_UNSUPPORTED[task]} yet (task {task})",
                         hint="run onnxkit export, validate, optimize and quantize on the folder one by one")
