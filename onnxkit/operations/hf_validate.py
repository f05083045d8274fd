"""Validation that knows it is looking at text: inputs made by the folder's own tokenizer,
padding exercised, token-level outputs compared only where the attention mask is 1.
Used by ``export`` of a Hugging Face folder and by ``validate FOLDER OUT/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxkit.foundation.compare import Tolerance
from onnxkit.errors import InputError, UsageError

# Different lengths, so a batch of them is padded and padding is exercised.
DEFAULT_TEXTS = (
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "ONNX Runtime runs the exported graph; the reference is the original PyTorch model.",
    "A considerably longer sentence, with commas, numbers like 3.14159 and 2026, and a few rare words "
    "such as quantization, tokenizer and embeddings, so that its token sequence is the longest of the batch.",
    "Short.",
)
MODEL_FILE = "model.onnx"
GENERATIVE_TASKS = ("text-generation", "text2text-generation")  # the tasks --generate applies to


def check_texts(texts: list[str]) -> list[str]:
    if any(not t.strip() for t in texts):
        raise UsageError("--text: an empty sentence validates nothing; give real text")
    return list(texts) or list(DEFAULT_TEXTS)


def masked(predict, token_outputs: tuple[str, ...]):
    """Zero the token-level outputs where attention_mask is 0, on both sides alike: what a
    model returns for padding is never read, so it must not decide the verdict."""
    def run(feeds):
        out = dict(predict(feeds))
        keep = np.asarray(feeds["attention_mask"]) != 0
        for name in token_outputs:
            if name in out:
                v = np.array(out[name], copy=True)
                v[~keep] = 0
                out[name] = v
        return out
    return run


def text_batches(model_src, texts: list[str]):
    """All texts in one padded batch, then the shortest alone (no padding at all)."""
    yield f"{len(texts)} texts, padded", model_src.tokenize(texts), None
    if len(texts) > 1:
        yield "shortest text alone", model_src.tokenize([min(texts, key=len)]), None


def validate_on_text(model_src, run, specs, texts: list[str], tolerance: Tolerance | None, *, reference_name: str,
                     candidate_name: str, new_tokens: int | None = None):
    from onnxkit.operations.validate import validate_models

    if model_src.task == "text-generation":
        from onnxkit.operations.hf_generate import DEFAULT_NEW_TOKENS, validate_generation

        return validate_generation(model_src, run, specs, texts, tolerance, new_tokens=new_tokens or DEFAULT_NEW_TOKENS,
                                   reference_name=reference_name, candidate_name=candidate_name)

    result = validate_models(
        masked(model_src.predict, model_src.token_outputs), masked(run, model_src.token_outputs), specs,
        tolerance=tolerance or Tolerance(), reference_name=reference_name, candidate_name=candidate_name,
        batches=text_batches(model_src, texts),
    )
    if model_src.token_outputs:
        result.notes.append(f"{', '.join(model_src.token_outputs)}: compared where attention_mask is 1 (padding is never read)")
    return result


def validate_if_hf_folder(source, model, options, **kwargs):
    """The validation of a Hugging Face folder SOURCE, or None when SOURCE is not one."""
    from onnxkit.operations.hf_export import is_hf_source

    if source is not None and is_hf_source(source, options):
        return validate_hf_folder(source, model, options, **kwargs)
    if options.task or options.texts or options.generate is not None:
        raise UsageError("--task, --text and --generate apply to a Hugging Face model folder SOURCE (config.json + safetensors)")
    return None


def validate_hf_folder(source, model, options, *, tolerance: Tolerance | None, providers=None, timeout=None,
                       unsupported: dict[str, object] | None = None, precision=None, tolerance_given=True):
    """``onnxkit validate HF_FOLDER OUT/`` (or OUT/model.onnx)."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.operations.validate_files import _session
    from onnxkit.frameworks.hf_fw import load

    unsupported = dict(unsupported or {})
    data = unsupported.pop("--data", None)  # image files, for an image model; checked once the task is known
    for flag, value in unsupported.items():
        if value:
            raise UsageError(f"{flag} does not apply to a Hugging Face folder source; give sentences with --text")
    given_texts = list(options.texts)
    texts = check_texts(options.texts)
    if options.generate is not None and options.generate <= 0:
        raise UsageError(f"--generate {options.generate}: give a positive number of new tokens")
    path = Path(model)
    seq2seq = path.is_dir() and not (path / MODEL_FILE).is_file() and (path / "encoder_model.onnx").is_file()
    if seq2seq:
        if precision is not None or any(str(p).split(":")[0].lower() == "openvino" for p in providers or []):
            raise UsageError("--provider openvino / --precision do not apply to an encoder-decoder folder yet; "
                             "validate it on ONNX Runtime")
        return _validate_seq2seq_folder(source, path, options, texts, tolerance, providers, timeout)
    if path.is_dir():
        path = path / MODEL_FILE
        if not path.is_file():
            raise InputError(f"{model} holds no {MODEL_FILE}")
    graph = load_onnx(path, trust=options.trust, load_external=False).model  # safety checks before ORT sees it
    if options.task is None:
        # Validate the head that was exported, not the one config.json names.
        task = next((p.value for p in graph.metadata_props if p.key == "onnxkit.task"), None)
        if task:
            options.task = task
    model_src = load(source, options)
    if model_src.task == "text2text-generation":
        raise UsageError(f"{model_src.folder.root.name} is an encoder-decoder: give the exported folder "
                         "(encoder_model.onnx, decoder_model.onnx, decoder_with_past_model.onnx), not one file")
    images = None
    if model_src.task == "image-classification":
        from onnxkit.operations.hf_vision_validate import check_texts_for_images, read_images

        check_texts_for_images(given_texts)
        images = read_images(data) if data is not None else None
    elif data:
        raise UsageError("--data does not apply to a Hugging Face folder of a text model (it gives image files "
                         "to an image-classification model); give sentences with --text")
    from onnxkit.operations.validate_precision import check_openvino_use, deployed

    precision = check_openvino_use(precision, providers, None, False)
    session = _session(path, options, providers, timeout, precision)
    tolerance, precision_notes = deployed(session, precision, tolerance, tolerance_given)
    try:
        if model_src.task == "image-classification":
            from onnxkit.operations.hf_vision_validate import validate_on_images

            result = validate_on_images(model_src, session.run, session.input_specs, data, tolerance,
                                        reference_name=f"{model_src.framework} {Path(str(source)).name}",
                                        candidate_name=str(path), images=images)
        else:
            result = validate_on_text(model_src, session.run, session.input_specs, texts, tolerance,
                                      reference_name=f"{model_src.framework} {Path(str(source)).name}",
                                      candidate_name=str(path), new_tokens=options.generate)
    finally:
        session.close()
    result.notes.append(f"task {model_src.task}")
    result.notes.extend(precision_notes)
    result.precision = getattr(session, "precision", None)
    return result


def _validate_seq2seq_folder(source, folder: Path, options, texts, tolerance, providers, timeout):
    """``validate T5_FOLDER OUT/``: the three graphs of an encoder-decoder export."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.frameworks.hf_fw import load
    from onnxkit.frameworks.hf_seq2seq import SEQ2SEQ_FILES
    from onnxkit.operations.hf_seq2seq_validate import validate_seq2seq
    from onnxkit.operations.validate_files import _session

    missing = [n for n in SEQ2SEQ_FILES if not (folder / n).is_file()]
    if missing:
        raise InputError(f"{folder} holds no {', '.join(missing)}; an encoder-decoder export has {', '.join(SEQ2SEQ_FILES)}")
    for name in SEQ2SEQ_FILES:
        load_onnx(folder / name, trust=options.trust, load_external=False)  # safety checks before ORT sees it
    if options.task not in (None, "text2text-generation"):
        raise UsageError(f"{folder} holds an encoder-decoder export; its task is text2text-generation, not {options.task}")
    options.task = "text2text-generation"
    model_src = load(source, options)
    sessions = []
    try:
        for name in SEQ2SEQ_FILES:
            sessions.append(_session(folder / name, options, providers, timeout))
        result = validate_seq2seq(model_src, {n: s.run for n, s in zip(SEQ2SEQ_FILES, sessions)}, texts, tolerance,
                                  new_tokens=options.generate, reference_name=f"{model_src.framework} {Path(str(source)).name}",
                                  candidate_name=str(folder))
    finally:
        for s in sessions:
            s.close()
    result.notes.append(f"task {model_src.task}")
    return result
