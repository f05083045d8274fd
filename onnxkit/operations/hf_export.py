"""``onnxkit export HF_FOLDER -o OUT/``: Optimum's folder layout (``model.onnx`` beside the
config and tokenizer files), validated on text the folder's own tokenizer encodes."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from onnxkit import __version__
from onnxkit.foundation.compare import Tolerance
from onnxkit.foundation.files import refuse_special_output
from onnxkit.errors import EnvironmentProblem, Interrupted, UsageError
from onnxkit.operations.hf_validate import GENERATIVE_TASKS, check_texts, validate_on_text
from onnxkit.operations.hf_vision_validate import check_texts_for_images, read_images


def is_hf_source(source, options) -> bool:
    from onnxkit.frameworks.hf_scan import is_hf_folder

    if options.framework is not None:
        return options.framework == "hf"
    return is_hf_folder(Path(str(source)))


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
                 "tf_model.h5", "flax_model.msgpack")


def check_output_folder(out: Path, root: Path) -> Path:
    """The output is a folder (made if missing) that is not the source folder itself."""
    if out.is_symlink():
        raise UsageError(f"output is a symbolic link; refusing to write through it: {out}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"a Hugging Face source exports to a folder (model.onnx, config, tokenizer); {out} is a file")
    refuse_special_output(out)
    if out.exists() and out.resolve() == root.resolve():
        raise UsageError(f"output would overwrite the input folder: {out}")
    weights = [n for n in _WEIGHT_FILES if (out / n).exists()] if out.is_dir() else []
    if weights:
        # Its config.json and tokenizer files would be replaced by this model's: a mistyped -o
        # naming another model folder would leave that model unloadable.
        raise UsageError(f"output folder {out} holds a model ({weights[0]}); its config and tokenizer files would be "
                         "overwritten", hint="give -o a new folder, or one an earlier export wrote")
    parent = out.resolve().parent
    if not parent.exists():
        raise EnvironmentProblem(f"output folder's parent does not exist: {parent}")
    if not os.access(parent if not out.exists() else out, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"output folder is not writable: {out if out.exists() else parent}")
    return out


def export_hf_folder(source, output, options, *, validate: bool = True, tolerance: Tolerance | None = None,
                     loaded=None, data=None):
    """Export a save_pretrained folder into ``output``/ with its config and tokenizer files."""
    from onnxkit.operations.export import ExportResult, _checker_problems, _io_dicts, add_metadata, source_digest
    from onnxkit.foundation.onnx_io import save_onnx
    from onnxkit.foundation.spec import outputs_from_onnx, specs_from_onnx
    from onnxkit.frameworks.hf_fw import load
    from onnxkit.frameworks.hf_scan import SIDE_FILES, check_links

    if options.inputs:
        raise UsageError("--input does not apply to a Hugging Face folder: its tokenizer decides the inputs")
    if options.output_names:
        raise UsageError("--output-names does not apply to a Hugging Face folder: outputs follow Optimum's names")
    if data is not None and not validate:
        raise UsageError("--data gives the images to validate on; it has no use with --no-validate")
    if options.texts and not validate:
        raise UsageError("--text gives the sentences to validate on; it has no use with --no-validate")
    texts = check_texts(options.texts)
    if options.generate is not None and options.generate <= 0:
        raise UsageError(f"--generate {options.generate}: give a positive number of new tokens")
    root = Path(str(source))
    out = check_output_folder(Path(output), root)
    t0 = time.perf_counter()
    model_src = loaded or load(root, options)
    check_links(model_src.folder.root, [model_src.folder.model_dir / n for n in SIDE_FILES], options.trust)
    images = None
    if model_src.task == "image-classification":
        check_texts_for_images(options.texts)
        images = read_images(data) if data is not None and validate else None  # a bad file fails before the export
    elif data is not None:
        raise UsageError("--data does not apply to a Hugging Face folder of a text model (it gives image files "
                         "to an image-classification model); give sentences with --text")
    if options.generate is not None and model_src.task not in GENERATIVE_TASKS:
        raise UsageError(f"--generate applies to text-generation and text2text-generation; "
                         f"this folder's task is {model_src.task}")
    files = model_src.export_files(options)
    digest = source_digest(root, options)
    for _, outcome in files:
        add_metadata(outcome.model, {
            "onnxkit.version": __version__,
            "onnxkit.source_framework": model_src.framework,
            "onnxkit.source_framework_version": model_src.framework_version,
            "onnxkit.source_sha256": digest,
            "onnxkit.source_name": root.name,
            "onnxkit.exporter": outcome.exporter,
            "onnxkit.task": model_src.task,
            "onnxkit.input_spec": json.dumps([s.to_dict() for s in model_src.input_specs]),
        })
    # The file a reader looks at first: model.onnx, or a seq2seq folder's first-step decoder.
    main_file, outcome = files[1] if len(files) > 1 else files[0]
    model = outcome.model
    export_seconds = time.perf_counter() - t0
    parent = out.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=".onnxkit-export-", dir=parent))
    try:
        problems = []
        for name, each in files:
            save_onnx(each.model, staging / name)
            problems += [p if len(files) == 1 else f"{name}: {p}" for p in _checker_problems(staging / name)]
        copied = _copy_side_files(model_src.folder.model_dir, staging, SIDE_FILES)
        result = ExportResult(
            command="export", source=str(source), output=str(out / main_file), framework=model_src.framework,
            framework_version=model_src.framework_version, exporter=outcome.exporter, opset=outcome.opset,
            inputs=_io_dicts(specs_from_onnx(model)), outputs=_io_dicts(outputs_from_onnx(model)),
            source_sha256=digest, checker_ok=not problems, checker_problems=problems,
            export_seconds=export_seconds, notes=list(outcome.notes),
        )
        onnx_files = [name for name, _ in files]
        if len(files) > 1:
            result.notes.append(f"{out}/ holds {', '.join(onnx_files)}; inputs and outputs shown are {main_file}'s")
        result.notes.append(f"task {model_src.task}; {out}/ also holds {', '.join(copied) or 'no side files'}")
        if problems:
            result.passed = False
            result.notes.append("onnx.checker rejected the exported model; it was written for inspection")
        elif validate:
            result.validation = _validate_staged(model_src, staging, onnx_files, texts, (data, images), tolerance, options,
                                                 reference_name=f"{model_src.framework} {root.name}",
                                                 candidate_name=f"{out.name}/{main_file}")
            result.validation.command = "export"
            result.passed = result.validation.passed
            if not result.passed:
                result.notes.append(f"validation failed; {out}/ was written so you can inspect it")
        else:
            result.notes.append("validation skipped (--no-validate)")
        _move_into(staging, out)
        result.file_size = sum((out / name).stat().st_size for name in onnx_files)
        return result
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _validate_staged(model_src, staging: Path, onnx_files: list[str], texts, images, tolerance, options, *,
                     reference_name: str, candidate_name: str):
    from onnxkit.runtime.session import make_session

    if len(onnx_files) > 1:
        from onnxkit.operations.hf_seq2seq_validate import validate_seq2seq

        runs = {name: make_session(staging / name).run for name in onnx_files}
        return validate_seq2seq(model_src, runs, texts, tolerance, new_tokens=options.generate,
                                reference_name=reference_name, candidate_name=candidate_name)
    session = make_session(staging / onnx_files[0])
    if model_src.task == "image-classification":
        from onnxkit.operations.hf_vision_validate import validate_on_images

        return validate_on_images(model_src, session.run, session.input_specs, images[0], tolerance,
                                  reference_name=reference_name, candidate_name=candidate_name, images=images[1])
    return validate_on_text(model_src, session.run, session.input_specs, texts, tolerance,
                            reference_name=reference_name, candidate_name=candidate_name, new_tokens=options.generate)


def _copy_side_files(model_dir: Path, dest: Path, names: tuple[str, ...]) -> list[str]:
    copied = []
    for name in names:
        src = model_dir / name
        # Followed symlinks are fine: a hub cache snapshot is made of links to its blobs.
        if src.is_file():
            shutil.copyfile(src, dest / name)
            copied.append(name)
    return copied


def _move_into(staging: Path, out: Path) -> None:
    """Side files and external data first, the .onnx files last: a reader that sees the new model
    finds everything it needs. A missing folder is renamed into place in one step."""
    if not out.exists():
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 is for staging, not for the user's folder
        os.replace(staging, out)
        return
    for f in sorted(staging.iterdir(), key=lambda p: p.suffix == ".onnx"):
        os.replace(f, out / f.name)
