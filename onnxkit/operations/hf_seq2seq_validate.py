"""Validation of a text2text-generation export (encoder + first-step decoder + decoder with
past): the encoder on padded text, then greedy decoding through ONNX Runtime's cache against
transformers' ``generate(do_sample=False, num_beams=1)``. Token ids must be identical; logits
and cache tensors are compared at every step, the source fed the same inputs as each graph."""

from __future__ import annotations

import numpy as np

from onnxkit.foundation.compare import Tolerance
from onnxkit.operations.hf_generate import DEFAULT_NEW_TOKENS, compare_generated_ids
from onnxkit.operations.hf_validate import masked, text_batches


def validate_seq2seq(model_src, runs: dict, texts: list[str], tolerance: Tolerance | None, *,
                     new_tokens: int | None, reference_name: str, candidate_name: str):
    """``runs`` maps each file name (encoder_model.onnx...) to its session's run(feeds)."""
    from onnxkit.frameworks.hf_seq2seq import DECODER_FILE, DECODER_PAST_FILE, ENCODER_FILE
    from onnxkit.operations.validate import validate_models

    tolerance = tolerance or Tolerance()
    new_tokens = new_tokens or DEFAULT_NEW_TOKENS
    encoder = masked(lambda feeds: runs[ENCODER_FILE](feeds), model_src.token_outputs)
    results = [(ENCODER_FILE, validate_models(
        masked(model_src.predict, model_src.token_outputs), encoder, [], tolerance=tolerance,
        reference_name=reference_name, candidate_name=candidate_name, batches=text_batches(model_src, texts),
    ))]

    # ONNX Runtime drives the decoding (its cache, its tokens); each graph's feeds are recorded
    # with its outputs, then the source is run on the very same feeds.
    steps: dict[str, list] = {DECODER_FILE: [], DECODER_PAST_FILE: []}
    # The first two texts decoded together, padded: cross-attention must honour
    # encoder_attention_mask, or the shorter text's tokens change.
    enc = model_src.tokenize(texts[:2])
    hidden = runs[ENCODER_FILE](enc)["last_hidden_state"]
    feeds = model_src.first_step(enc, hidden)
    seq = feeds["input_ids"]
    for step in range(new_tokens):
        file = DECODER_FILE if step == 0 else DECODER_PAST_FILE
        out = runs[file](feeds)
        steps[file].append((f"step {step}", feeds, out))
        token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        seq = np.concatenate([seq, token], axis=1)
        feeds = model_src.next_step(feeds, out, token)
    for file, recorded in steps.items():
        if recorded:
            results.append((file, _compare_recorded(validate_models, model_src, recorded, tolerance,
                                                    reference_name, candidate_name)))
    result = _merge(results, tolerance)
    want_all = model_src.generate(enc, new_tokens)
    for k in range(seq.shape[0]):
        want, got = want_all[k:k + 1], seq[k:k + 1, :want_all.shape[1]]
        compare_generated_ids(result, k, want, got, 1, tolerance)  # position 0: the decoder start token
    result.passed = all(o.passed for o in result.outputs)
    result.notes.append("last_hidden_state: compared where attention_mask is 1 (padding is never read)")
    result.notes.append(f"greedy decoding of {new_tokens} new tokens through encoder, decoder and cache on "
                        f"{seq.shape[0]} prompt(s) in one padded batch, against generate(do_sample=False, num_beams=1)")
    return result


def _compare_recorded(validate_models, model_src, recorded, tolerance, reference_name, candidate_name):
    outputs = iter([out for _, _, out in recorded])
    # No input check (specs=[]): these feeds are built here from the graphs' own outputs.
    return validate_models(model_src.predict, lambda feeds: next(outputs), [], tolerance=tolerance,
                           reference_name=reference_name, candidate_name=candidate_name,
                           batches=((label, feeds, None) for label, feeds, _ in recorded))


def _merge(results, tolerance: Tolerance):
    """One result from the per-file ones; each output is named with its file."""
    import fnmatch

    merged = results[0][1]
    parts = [(file, r, list(r.outputs), list(r.input_sets), list(r.notes)) for file, r in results]
    merged.outputs, merged.input_sets, merged.notes = [], [], []
    merged.samples = merged.batches = 0
    for file, r, outputs, input_sets, notes in parts:
        for o in outputs:
            o.name = f"{o.name} ({file})"
        merged.outputs.extend(outputs)
        merged.samples += r.samples
        merged.batches += r.batches
        merged.input_sets.extend(f"{file}: {s}" for s in input_sets)
        # A --tol pattern is judged against every file's outputs below, not one file's.
        merged.notes.extend(n for n in notes if n not in merged.notes and not n.startswith("--tol "))
        if r is not merged:
            merged.warnings.extend(r.warnings)
            merged.non_finite_inputs = sorted({*merged.non_finite_inputs, *r.non_finite_inputs})
    for pat, _, _ in tolerance.per_output:
        if not any(fnmatch.fnmatchcase(n, pat) for o in merged.outputs for n in (o.name, o.reference_name)):
            merged.notes.append(f"--tol {pat}=...: no output matches {pat!r}")
    return merged
