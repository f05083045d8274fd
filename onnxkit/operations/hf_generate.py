"""Validation of a text-generation export: greedy decoding through the ONNX graph's KV cache
against transformers' ``generate(do_sample=False)``. Token ids must be identical; logits and
cache tensors are compared at every step, the source fed the same cache as the ONNX graph."""

from __future__ import annotations

import numpy as np

from onnxkit.foundation.compare import Tolerance, compare_once

DEFAULT_NEW_TOKENS = 8


def validate_generation(model_src, run, specs, texts: list[str], tolerance: Tolerance | None, *, new_tokens: int,
                        reference_name: str, candidate_name: str):
    from onnxkit.operations.validate import validate_models

    tolerance = tolerance or Tolerance()
    prompts = [np.asarray(model_src.tokenizer(t, return_tensors="np")["input_ids"], dtype=np.int64) for t in texts[:2]]
    generated: list[np.ndarray] = []
    last: dict = {}

    def candidate(feeds):
        last["out"] = run(feeds)
        return last["out"]

    def steps():
        # Each step's feeds depend on the ONNX graph's previous outputs (its cache, its token).
        for k, prompt in enumerate(prompts):
            feeds = model_src.first_step(prompt)
            seq = prompt
            for step in range(new_tokens):
                yield f"text {k + 1} step {step}", feeds, None
                out = last["out"]
                token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
                seq = np.concatenate([seq, token], axis=1)
                feeds = model_src.next_step(feeds, out, token)
            generated.append(seq)

    # No input check (specs=[]): the first step's cache is empty on purpose, which the generic
    # check refuses as a vacuous input; these feeds are built here, not read from a user.
    result = validate_models(model_src.predict, candidate, [], tolerance=tolerance, reference_name=reference_name,
                             candidate_name=candidate_name, batches=steps())
    for k, prompt in enumerate(prompts):
        want = model_src.generate(prompt, new_tokens)
        # generate() stops at EOS; ONNX decoding went on, so its prefix is what must agree.
        got = generated[k][:, :want.shape[1]]
        if want.shape[1] < generated[k].shape[1]:
            result.notes.append(f"text {k + 1}: generate() stopped at EOS after {want.shape[1] - prompt.shape[1]} "
                                "new tokens; those are compared")
        compare_generated_ids(result, k, want, got, prompt.shape[1], tolerance)
    result.passed = all(o.passed for o in result.outputs)
    result.notes.append(f"greedy decoding of {new_tokens} new tokens through the KV cache on {len(prompts)} prompt(s), "
                        "against generate(do_sample=False)")
    return result


def compare_generated_ids(result, k: int, want, got, start: int, tolerance) -> None:
    """Text ``k``'s greedy ids through ONNX Runtime (``got``) against generate()'s (``want``),
    as an output of ``result``; a difference is noted from position ``start`` (the new tokens)."""
    ids = compare_once({"generated_ids": want}, {"generated_ids": got}, tolerance, label_outputs=("generated_ids",))[0]
    ids.name = f"generated_ids (text {k + 1})"
    result.outputs.append(ids)
    if not ids.passed:
        result.notes.append(f"text {k + 1}: greedy ids through ONNX Runtime {got[0, start:].tolist()} "
                            f"differ from generate()'s {want[0, start:].tolist()}")
