"""``onnxkit optimize OUT/ -o OUT-OPT/`` and ``onnxkit quantize OUT/ -o OUT-INT8/`` on an
exported Hugging Face folder: every ONNX file in it, the config and tokenizer files copied,
the output folder staged beside its destination and renamed into place (it must not exist:
nothing is overwritten). Each step is checked on text the folder's own tokenizer encodes,
token-level outputs compared where the attention mask is 1, a decoder through its cache."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import ConversionError, EnvironmentProblem, Interrupted, UsageError
from onnxkit.frameworks.hf_scan import check_links
from onnxkit.operations.hf_folder_ref import IMAGE_TASK, MODEL_FILE, TEXT_INPUTS, ExportedFolder, OnnxTextModel, load_tokenizer, \
    read_exported_folder
from onnxkit.results import Result, Table, fmt_bytes, fmt_num

# transformers model_type -> onnxruntime.transformers model type whose fusions fit it.
FUSION_TYPES = {
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert", "electra": "bert",
    "camembert": "bert", "mpnet": "bert", "albert": "bert", "deberta": "bert", "deberta-v2": "bert",
    "gpt2": "gpt2", "vit": "vit", "bart": "bart", "t5": "t5", "phi": "phi",
}
# More sentences than validation uses: quantize measures its error budget on them.
MEASURE_TEXTS = (
    "The weather is lovely today.", "He drove to the stadium.", "A cheetah is running behind its prey.",
    "The new movie is awesome, I loved every minute of it!", "Where is the nearest train station?",
    "Quantum computers exploit superposition and entanglement to solve certain problems faster.",
    "Please send me the report by Friday afternoon.", "ok", "Two dogs play in the snow.",
    "Stock markets fell sharply after the central bank raised interest rates by half a point.",
    "I can't believe it's already December; the year went by so fast.", "Is this the right way to the museum?",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.", "Thanks!",
    "Researchers published a dataset of 10,000 annotated images for medical segmentation.",
    "She plays the violin in the city orchestra every Sunday evening.",
)


@dataclass
class FolderResult(Result):
    """optimize or quantize of a folder: one sub-result per ONNX file, then the text check."""
    model: str = ""
    output: str = ""
    task: str = ""
    config_shape: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    validation: dict[str, Any] | None = None
    _file_tables: list[Table] = field(default_factory=list, repr=False)
    _validation_tables: list[Table] = field(default_factory=list, repr=False)

    def tables(self) -> list[Table]:
        rows = [[f["file"], fmt_bytes(f.get("size_before")), fmt_bytes(f.get("size_after")),
                 fmt_num(f.get("latency_ms_before")), fmt_num(f.get("latency_ms_after")),
                 "pass" if f.get("passed") else "FAIL"] for f in self.files]
        head = Table(f"{self.command} {Path(self.model).name}/ -> {Path(self.output).name}/ (task {self.task})",
                     ["file", "size before", "size after", "ms before", "ms after", "verdict"], rows)
        return [head, *self._file_tables, *self._validation_tables]

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("_file_tables", None)
        d.pop("_validation_tables", None)
        return d


def check_new_folder(out: Path, inputs: list[Path]) -> Path:
    """The output folder must not exist (a folder is never merged into, nor overwritten) and
    its parent must be writable."""
    from onnxkit.foundation.files import refuse_special_output

    if out.suffix.lower() == ".onnx":
        raise UsageError(f"a folder is written into a folder; -o {out} names an ONNX file",
                         hint="give -o a new folder, e.g. out-int8/")
    if out.is_symlink() or out.exists():
        raise UsageError(f"output folder already exists: {out}; onnxkit writes a new folder and never overwrites one",
                         hint="remove it or choose another -o")
    refuse_special_output(out)
    parent = out.absolute().parent
    for src in inputs:
        if parent.resolve() == src.resolve() or parent.resolve().is_relative_to(src.resolve()):
            raise UsageError(f"output folder {out} would be inside the input folder {src}")
    if not parent.is_dir():
        raise EnvironmentProblem(f"output folder's parent does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"cannot write in {parent}")
    return out


class _Staging:
    """A hidden folder beside the destination, renamed into place only when complete; removed
    on any failure, so an interrupted run leaves nothing behind."""

    def __init__(self, out: Path, prefix: str) -> None:
        self.out = out
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir=out.absolute().parent))
        self.scratch = Path(tempfile.mkdtemp(prefix="onnxkit-hf-"))

    def __enter__(self) -> "_Staging":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.cleanup()
        if kind is KeyboardInterrupt:
            raise Interrupted() from None

    def publish(self, folder: ExportedFolder) -> list[str]:
        """Copy the folder's side files in, then rename into place; the side files copied."""
        copied = _copy_sides(folder, self.dir)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.dir, 0o777 & ~umask)  # mkdtemp's 0700 is for staging, not for the user's folder
        if self.out.exists() or self.out.is_symlink():  # appeared while we worked
            raise UsageError(f"output folder appeared while writing: {self.out}; not overwritten")
        os.rename(self.dir, self.out)
        return copied

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


def _copy_sides(folder: ExportedFolder, dest: Path) -> list[str]:
    for name in folder.side_files:
        shutil.copyfile(folder.root / name, dest / name)
    return list(folder.side_files)


def _text_inputs_only(specs: list) -> bool:
    return all(s.name in TEXT_INPUTS for s in specs) and any(s.name == "input_ids" for s in specs)


def reference_session(path: Path, trust: bool):
    """The user's input model: run in a contained worker unless --trust (docs/security.md);
    each text batch and decoding step goes through it there."""
    from onnxkit.runtime.contained import ContainedSession
    from onnxkit.runtime.session import make_session

    return make_session(path) if trust else ContainedSession(path)


def compare_on_text(folder: ExportedFolder, reference: Path, candidate: Path, tolerance, *, trust: bool,
                    texts: list[str] | None = None, new_tokens: int | None = None, tokenizer=None):
    """The candidate file against the reference file of the folder: tokenized text for a text
    model (padded, masked), greedy decoding through the cache for a decoder; seeded random
    inputs (noted) for a file that takes other inputs (a seq2seq decoder)."""
    from onnxkit.runtime.session import make_session

    ref_session = reference_session(reference, trust)
    try:
        return _compare(folder, ref_session, reference, candidate, tolerance, texts=texts, new_tokens=new_tokens,
                        tokenizer=tokenizer, candidate_session=make_session(candidate), trust=trust)
    finally:
        ref_session.close()


def _compare(folder, ref_session, reference: Path, candidate: Path, tolerance, *, texts, new_tokens, tokenizer,
             candidate_session, trust: bool = False):
    from onnxkit.operations.hf_seq2seq_feeds import decoder_batches
    from onnxkit.operations.hf_validate import check_texts, validate_on_text
    from onnxkit.operations.optimize import validate_pair
    from onnxkit.operations.validate import validate_models

    text_model = folder.task != IMAGE_TASK and (reference.name == MODEL_FILE or _text_inputs_only(ref_session.input_specs))
    batches = None if text_model or folder.task != "text2text-generation" else decoder_batches(
        folder.root, folder.config, reference.name, {s.name for s in ref_session.input_specs}, tokenizer,
        check_texts(list(texts or [])), lambda p: reference_session(p, trust))
    if batches is not None:
        v = validate_models(ref_session.run, candidate_session.run, [], tolerance=tolerance,
                            reference_name=f"{folder.root.name}/{reference.name}", candidate_name=candidate.name,
                            batches=batches)
        v.notes.append(f"encoder_hidden_states from {folder.root.name}'s encoder on tokenized text"
                       + (", the cache from its first-step decoder" if any("past_key_values." in b for b in batches[0][1])
                          else ""))
        return v
    if not text_model:
        v = validate_pair(str(reference), str(candidate), ref_session.input_specs, tolerance,
                          ref_name=reference.name, cand_name=candidate.name)
        names = ', '.join(s.name for s in ref_session.input_specs)
        v.notes.append(f"{reference.name} takes {names if folder.task == IMAGE_TASK else f'more than text ({names})'}: "
                       "compared on seeded random inputs")
        return v
    ref = OnnxTextModel(folder, ref_session, tokenizer=tokenizer)
    cand = candidate_session
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = validate_on_text(ref, cand.run, cand.input_specs, check_texts(list(texts or [])), tolerance,
                             reference_name=f"{folder.root.name}/{reference.name}", candidate_name=candidate.name,
                             new_tokens=new_tokens)
    return v


def _record_validation(res: FolderResult, v, *, name: str, decides: bool) -> None:
    res._validation_tables.extend(t for t in v.tables()[:2])
    res.validation = (res.validation or {}) | {name: v.to_dict()}
    res.notes.extend(f"{name}: {n}" for n in v.notes)
    if decides and not v.passed:
        res.passed = False


def _folder_shape_notes(folder: ExportedFolder, shape: dict[str, int]) -> list[str]:
    if shape["num_heads"] and shape["hidden_size"]:
        kv = shape["num_key_value_heads"]
        return [f"config.json: {shape['num_heads']} attention heads, hidden size {shape['hidden_size']}"
                + (f", {kv} key/value heads" if kv and kv != shape["num_heads"] else "")]
    return ["config.json states no head count / hidden size: fusion detects them from the graph"]


def _per_file(options: dict, folder: ExportedFolder, name: str) -> dict:
    """A decoder's inputs must agree with each other (the mask spans cache + new tokens): the
    random inputs that the per-file probe and latency use cannot run it. Its text inputs are
    rehearsed through the contained reference instead, and bench times it through its cache."""
    if folder.task == "text-generation" and name == MODEL_FILE:
        return options | {"probe": False, "latency": False}
    return options


def optimize_folder(model_path: Any, output: Any, *, transformer: str | None = None, num_heads: int = 0, hidden_size: int = 0,
                    tol: list[str] | None = None, rtol: float | None = None, fp16: bool = False, validate: bool = True,
                    trust: bool = False, **options: Any) -> FolderResult:
    """Every ONNX file of the folder through optimize_model; the config's heads and hidden size
    feed transformer fusion, which is on by default for the architectures it knows."""
    from onnxkit.foundation.compare import make_tolerance
    from onnxkit.operations.optimize import optimize_model

    folder = read_exported_folder(model_path, trust=trust)
    out = check_new_folder(Path(output), [folder.root])
    check_links(folder.root, [folder.root / n for n in folder.side_files], trust)
    tolerance = make_tolerance(tol, rtol, preset="fp16" if fp16 else "fp32")
    shape = folder.shape_from_config()
    res = FolderResult(command="optimize", model=str(folder.root), output=str(out), task=folder.task, config_shape=shape)
    res.notes.extend(_folder_shape_notes(folder, shape))
    chosen = transformer is None and folder.task != "text-generation"
    if chosen:
        # Not for a decoder: the fusers check their graph on random inputs, which a graph with
        # a cache cannot run (the mask must span past + new tokens); --transformer still asks.
        transformer = FUSION_TYPES.get(str(folder.config.get("model_type", "")))
        if transformer:
            res.notes.append(f"transformer fusion ({transformer}) chosen from config.json's model_type "
                             f"{folder.config.get('model_type')}")
    with _Staging(out, ".onnxkit-optimize-") as staging:
        tokenizer = load_tokenizer(folder.root) if validate and folder.task != IMAGE_TASK else None
        for name in folder.onnx_files:
            def run(fusion: str | None):
                return optimize_model(folder.root / name, staging.dir / name, transformer=fusion,
                                      num_heads=num_heads or shape["num_heads"], hidden_size=hidden_size or shape["hidden_size"],
                                      tol=tol, rtol=rtol, fp16=fp16, validate=False, trust=trust,
                                      **_per_file(options, folder, name))
            try:
                r = run(transformer)
            except ConversionError as exc:
                if not (chosen and transformer):
                    raise
                # Fusion was this command's choice, not the user's: the other passes still apply.
                res.notes.append(f"{name}: transformer fusion failed ({exc.message[:160]}); optimized without it")
                r = run(None)
            res.files.append({"file": name, "passed": True} | {k: v for k, v in r.to_dict().items() if k not in ("command",)})
            res._file_tables.extend(r.tables()[1:])
            res.notes.extend(f"{name}: {n}" for n in r.notes if "validation skipped" not in n)
            if validate:
                v = compare_on_text(folder, folder.root / name, staging.dir / name, tolerance, trust=trust,
                                    tokenizer=tokenizer)
                res.files[-1]["passed"] = v.passed
                _record_validation(res, v, name=name, decides=True)
        if not validate:
            res.notes.append("validation skipped (--no-validate): the result was not compared with the input")
        elif not res.passed:
            res.notes.append(f"an optimized file differs from the input beyond tolerance; {out}/ was written anyway")
        res.copied = staging.publish(folder)
    return res


def measure_feeds(ref: OnnxTextModel, texts: list[str]) -> dict[str, np.ndarray]:
    """Inputs quantize measures its error on: the tokenized sentences, padded; for a decoder
    one decoding step after each sentence, with the cache the float model computed for it."""
    if ref.task != "text-generation":
        return ref.tokenize(texts)
    steps = []
    for t in texts:
        prompt = np.asarray(ref.tokenizer(t, return_tensors="np")["input_ids"], dtype=np.int64)
        feeds = ref.first_step(prompt)
        out = ref.session.run(feeds)
        token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        steps.append(ref.next_step(feeds, out, token))
    # One row per sentence needs one cache length: each is cut to the shortest prompt's.
    shortest = min(s[ref.past_names[0]].shape[2] for s in steps)
    rows = []
    for s in steps:
        cut = {k: (v[:, :, -shortest:] if k in ref.past_names else v) for k, v in s.items()}
        cut["attention_mask"] = np.ones((1, shortest + 1), np.int64)
        if "position_ids" in cut:
            cut["position_ids"] = np.full((1, 1), shortest, np.int64)
        rows.append(cut)
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def quantize_folder(model_path: Any, output: Any, *, trust: bool = False, data: str | None = None, calib_data: str | None = None,
                    **options: Any) -> FolderResult:
    """Every ONNX file of the folder through quantize_model, its error budget measured on the
    folder's tokenized sentences (padding ignored), then the text check for the report."""
    from onnxkit.foundation.compare import Tolerance
    from onnxkit.operations.quantize import quantize_model

    folder = read_exported_folder(model_path, trust=trust)
    out = check_new_folder(Path(output), [folder.root])
    check_links(folder.root, [folder.root / n for n in folder.side_files], trust)
    res = FolderResult(command="quantize", model=str(folder.root), output=str(out), task=folder.task,
                       config_shape=folder.shape_from_config())
    with _Staging(out, ".onnxkit-quantize-") as staging:
        tokenizer = load_tokenizer(folder.root) if folder.task != IMAGE_TASK else None
        for name in folder.onnx_files:
            src = folder.root / name
            eval_data = data
            if data is None and calib_data is None and tokenizer is not None:
                session = reference_session(src, trust)
                try:
                    if name == MODEL_FILE or _text_inputs_only(session.input_specs):
                        ref = OnnxTextModel(folder, session, tokenizer=tokenizer)
                        eval_data = str(staging.scratch / f"{Path(name).stem}-text.npz")
                        feeds = measure_feeds(ref, list(MEASURE_TEXTS))
                        session.run(feeds)  # the exact rows quantize measures on, contained first
                        np.savez(eval_data, **feeds)
                finally:
                    session.close()
            r = quantize_model(src, staging.dir / name, trust=trust, data=eval_data, calib_data=calib_data,
                               **_per_file(options, folder, name))
            d = r.to_dict()
            res.files.append({"file": name, "passed": r.passed} | {k: v for k, v in d.items() if k != "command"})
            if eval_data is not None and data is None:
                res.files[-1]["eval_data"] = f"{len(MEASURE_TEXTS)} built-in sentences, tokenized by {folder.root.name}'s tokenizer"
            res._file_tables.extend(r.tables())
            res.notes.extend(f"{name}: {n}" for n in r.notes)
            if not r.passed:
                res.passed = False
            # The budget above is the verdict; this shows the quantized file on the validation
            # sentences as export showed the float one (cosine, agreement), never failing it.
            v = compare_on_text(folder, src, staging.dir / name, Tolerance(atol=1e30, rtol=0.0), trust=trust,
                                tokenizer=tokenizer)
            _record_validation(res, v, name=name, decides=False)
            res.notes.append(f"{name}: the comparison on the validation {'inputs' if tokenizer is None else 'sentences'} "
                             "above informs; the verdict is the error budget")
        res.copied = staging.publish(folder)
    return res
