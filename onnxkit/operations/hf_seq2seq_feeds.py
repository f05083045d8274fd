"""Inputs of an encoder-decoder folder's decoder files made from text: encoder_hidden_states
from the folder's own encoder on tokenized sentences, the cache from its first-step decoder.
Random hidden states and masks are inputs no encoder produces (a random int mask is not 0/1),
and a faithful rewrite can differ on them beyond fp32 tolerance: a false FAIL."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

ENCODER_FILE = "encoder_model.onnx"
FIRST_STEP_FILE = "decoder_model.onnx"
_PROMPT_TOKENS = 3  # decoder tokens after the start token: a few real ids, as decoding would feed


def decoder_batches(root: Path, config: dict[str, Any], reference_file: str, names: set[str], tokenizer,
                    texts: list[str], open_session: Callable[[Path], Any]) -> list[tuple[str, dict, None]] | None:
    """(label, feeds, None) batches for ``reference_file`` (a decoder of the folder at ``root``)
    that take exactly ``names``; None when the file takes inputs this does not know, so the
    caller falls back to random inputs."""
    if tokenizer is None or not (root / ENCODER_FILE).is_file():
        return None
    with_past = any(n.startswith("past_key_values.") for n in names)
    if with_past and not (root / FIRST_STEP_FILE).is_file():
        return None
    encoder = open_session(root / ENCODER_FILE)
    first = open_session(root / FIRST_STEP_FILE) if with_past else None
    try:
        out = []
        for label, rows in ((f"{len(texts)} texts, padded", texts), ("shortest text alone", [min(texts, key=len)])):
            feeds = _feeds(encoder, first, config, tokenizer, rows, names)
            if feeds is None:
                return None
            out.append((label, feeds, None))
            if len(texts) == 1:
                break
        return out
    finally:
        for s in (encoder, first):
            if s is not None and hasattr(s, "close"):
                s.close()


def _feeds(encoder, first, config: dict, tokenizer, rows: list[str], names: set[str]) -> dict | None:
    enc = tokenizer(list(rows), padding=True, truncation=True, return_tensors="np")
    ids, mask = np.asarray(enc["input_ids"], np.int64), np.asarray(enc["attention_mask"], np.int64)
    hidden = encoder.run({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    start = config.get("decoder_start_token_id")
    start = start if isinstance(start, int) and not isinstance(start, bool) and start >= 0 else 0
    dec_ids = np.concatenate([np.full((ids.shape[0], 1), start, np.int64), ids[:, :_PROMPT_TOKENS]], axis=1)
    feeds = {"input_ids": dec_ids, "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
    if first is not None:
        step = first.run({k: v for k, v in feeds.items() if k in {"input_ids", "encoder_hidden_states",
                                                                    "encoder_attention_mask"}})
        feeds = {"input_ids": step["logits"][:, -1].argmax(-1)[:, None].astype(np.int64),
                 "encoder_hidden_states": hidden, "encoder_attention_mask": mask}
        feeds.update({k.replace("present.", "past_key_values.", 1): v for k, v in step.items() if k.startswith("present.")})
    if not names <= set(feeds):
        return None
    return {k: feeds[k] for k in names}
