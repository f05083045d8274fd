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
from onnxkit.operations.hf_validate import MODEL_FILE, check_texts, validate_on_text



def is_hf_source(source, options) -> bool:
    from onnxkit.frameworks.hf_scan import is_hf_folder

    if options.framework is not None:
        return options.framework == "hf"
    return is_hf_folder(Path(str(source)))


def check_output_folder(out: Path, root: Path) -> Path:
    """The output is a folder (made if missing) that is not the source folder itself."""
    if out.is_symlink():
        raise UsageError(f"output is a symbolic link; refusing to write through it: {out}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"a Hugging Face source exports to a folder (model.onnx, config, tokenizer); {out} is a file")
    refuse_special_output(out)
    if out.exists() and out.resolve() == root.resolve():
        raise UsageError(f"output would overwrite the input folder: {out}")
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
    from onnxkit.frameworks.hf_scan import SIDE_FILES
    from onnxkit.runtime.session import make_session

    if options.inputs:
        raise UsageError("--input does not apply to a Hugging Face folder: its tokenizer decides the inputs")
    if options.output_names:
        raise UsageError("--output-names does not apply to a Hugging Face folder: outputs follow Optimum's names")
    if data is not None:
        raise UsageError("--data does not apply to a Hugging Face folder yet; give sentences with --text")
    if options.texts and not validate:
        raise UsageError("--text gives the sentences to validate on; it has no use with --no-validate")
    texts = check_texts(options.texts)
    if options.generate is not None and options.generate <= 0:
        raise UsageError(f"--generate {options.generate}: give a positive number of new tokens")
    root = Path(str(source))
    out = check_output_folder(Path(output), root)
    t0 = time.perf_counter()
    model_src = loaded or load(root, options)
    if options.generate is not None and model_src.task != "text-generation":
        raise UsageError(f"--generate applies to text-generation; this folder's task is {model_src.task}")
    outcome = model_src.export(options)
    model = outcome.model
    digest = source_digest(root, options)
    add_metadata(model, {
        "onnxkit.version": __version__,
        "onnxkit.source_framework": model_src.framework,
        "onnxkit.source_framework_version": model_src.framework_version,
        "onnxkit.source_sha256": digest,
        "onnxkit.source_name": root.name,
        "onnxkit.exporter": outcome.exporter,
        "onnxkit.task": model_src.task,
        "onnxkit.input_spec": json.dumps([s.to_dict() for s in model_src.input_specs]),
    })
    export_seconds = time.perf_counter() - t0
    parent = out.resolve().parent
    staging = Path(tempfile.mkdtemp(prefix=".onnxkit-export-", dir=parent))
    try:
        staged = staging / MODEL_FILE
        save_onnx(model, staged)
        copied = _copy_side_files(model_src.folder.model_dir, staging, SIDE_FILES)
        problems = _checker_problems(staged)
        result = ExportResult(
            command="export", source=str(source), output=str(out / MODEL_FILE), framework=model_src.framework,
            framework_version=model_src.framework_version, exporter=outcome.exporter, opset=outcome.opset,
            inputs=_io_dicts(specs_from_onnx(model)), outputs=_io_dicts(outputs_from_onnx(model)),
            source_sha256=digest, checker_ok=not problems, checker_problems=problems,
            export_seconds=export_seconds, notes=list(outcome.notes),
        )
        result.notes.append(f"task {model_src.task}; {out}/ also holds {', '.join(copied) or 'no side files'}")
        if problems:
            result.passed = False
            result.notes.append("onnx.checker rejected the exported model; it was written for inspection")
        elif validate:
            session = make_session(staged)
            result.validation = validate_on_text(
                model_src, session.run, session.input_specs, texts, tolerance,
                reference_name=f"{model_src.framework} {root.name}", candidate_name=f"{out.name}/{MODEL_FILE}",
                new_tokens=options.generate,
            )
            result.validation.command = "export"
            result.passed = result.validation.passed
            if not result.passed:
                result.notes.append(f"validation failed; {out}/ was written so you can inspect it")
        else:
            result.notes.append("validation skipped (--no-validate)")
        _move_into(staging, out)
        result.file_size = (out / MODEL_FILE).stat().st_size
        return result
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    """Side files and external data first, model.onnx last: a reader that sees the new model
    finds everything it needs. A missing folder is renamed into place in one step."""
    if not out.exists():
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 is for staging, not for the user's folder
        os.replace(staging, out)
        return
    for f in sorted(staging.iterdir(), key=lambda p: p.name == MODEL_FILE):
        os.replace(f, out / f.name)
