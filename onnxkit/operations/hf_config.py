"""The pipeline config of a Hugging Face folder source: what ``onnxkit init`` writes for one
(``task``, no input specs: the tokenizer decides the inputs)."""

from __future__ import annotations

from typing import Any


def init_values(values: dict[str, dict[str, Any]], model: Any) -> None:
    """Adjust the starter config ``values`` that init_config built for the loaded folder ``model``."""
    values["source"]["inputs"] = []
    values["source"]["task"] = model.task
    values["export"]["opset"] = None
    # The auto modes time single files; a folder gets the fixed passes and dynamic int8.
    values["optimize"]["mode"] = "fixed"
    values["quantize"]["mode"] = "dynamic"
    if model.task == "text-generation":
        # One batch size: a decoder is timed per token through its cache, one prompt at a time.
        values["bench"] = {"batch_sizes": [1], "threads": 1}
