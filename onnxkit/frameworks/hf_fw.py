"""Hugging Face transformers folders (``save_pretrained``) as a source.

The folder is read as data first (hf_scan); transformers then loads it offline, from
safetensors, never with remote code unless --trust. The exported graph takes the
tokenizer's tensors under Optimum's names and returns the task's outputs under Optimum's
names, so tools that load Optimum folders load ours unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.files import preflight
from onnxkit.foundation.spec import InputSpec
from onnxkit.errors import ConversionError, InputError, UsageError
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.frameworks.hf_scan import PLANNED_TASKS, TASKS, HFFolder, SentencePooling, check_preprocessing, scan_folder

log = logging.getLogger(__name__)

# task -> (Auto class, output names; those listed in TOKEN_LEVEL are per token)
_HEADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "feature-extraction": ("AutoModel", ("last_hidden_state",)),
    "text-classification": ("AutoModelForSequenceClassification", ("logits",)),
    "token-classification": ("AutoModelForTokenClassification", ("logits",)),
    "fill-mask": ("AutoModelForMaskedLM", ("logits",)),
    "question-answering": ("AutoModelForQuestionAnswering", ("start_logits", "end_logits")),
    "text-generation": ("AutoModelForCausalLM", ("logits",)),
    "text2text-generation": ("AutoModelForSeq2SeqLM", ("logits",)),
}
TOKEN_LEVEL = {
    "feature-extraction": ("last_hidden_state", "token_embeddings"),
    "token-classification": ("logits",),
    "fill-mask": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@contextlib.contextmanager
def offline():
    """No network while transformers resolves files: everything comes from the folder."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load(source: str | Path, options: LoadOptions) -> SourceModel:
    root = preflight(source, what="source", allow_dir=True)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; a Hugging Face source is a save_pretrained folder")
    folder = scan_folder(root, options.trust)
    task = options.task or folder.infer_task()
    if task in PLANNED_TASKS:
        raise UsageError(f"--task {task} is not supported yet for Hugging Face folders; supported: {', '.join(TASKS)}")
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}; choose from {', '.join(TASKS)}")
    if folder.pooling is not None and task != "feature-extraction":
        raise UsageError(f"{root.name} is a sentence-transformers folder: its task is feature-extraction, not {task}")
    check_preprocessing(folder, task)
    if task == "image-classification":
        from onnxkit.frameworks.hf_vision import HFVisionSource

        return HFVisionSource(folder, task, options.trust)
    if task == "text-generation":
        from onnxkit.frameworks.hf_decoder import HFDecoderSource

        return HFDecoderSource(folder, task, options.trust)
    if task == "text2text-generation":
        if not folder.config.get("is_encoder_decoder"):
            raise UsageError(f"{root.name} ({folder.architecture or folder.config['model_type']}) is not an encoder-decoder "
                             "model; text2text-generation needs one (T5, BART...)")
        from onnxkit.frameworks.hf_seq2seq import HFSeq2SeqSource

        return HFSeq2SeqSource(folder, task, options.trust)
    return HFSource(folder, task, options.trust)


class HFSource(SourceModel):
    framework = "transformers"

    def __init__(self, folder: HFFolder, task: str, trust: bool) -> None:
        torch = require("torch", "torch")
        transformers = require("transformers", "transformers")
        self.framework_version = transformers.__version__
        self.folder = folder
        self.path = folder.root
        self.task = task
        self.notes: list[str] = []
        auto = getattr(transformers, _HEADS[task][0])
        kwargs: dict[str, Any] = {
            "local_files_only": True, "trust_remote_code": bool(trust and folder.custom_code),
            "use_safetensors": folder.weights == "safetensors",
            # Exported and compared in float32 whatever the checkpoint's dtype.
            "dtype": torch.float32,
        }
        bad_file = _load_errors()
        with offline(), _quiet_transformers():
            try:
                self.model, info = auto.from_pretrained(str(folder.model_dir), output_loading_info=True, **kwargs)
                self.model.eval()
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder.model_dir), local_files_only=True,
                                                                            trust_remote_code=kwargs["trust_remote_code"])
            except bad_file as exc:
                raise InputError(f"transformers cannot load {folder.root.name} for {task}: {_first_line(exc)}") from None
        dtype = folder.config.get("torch_dtype") or folder.config.get("dtype")
        if dtype and dtype != "float32":
            self.notes.append(f"the checkpoint is {dtype}; exported and validated in float32")
        encoder_only = task == "feature-extraction" and _takes_decoder_inputs(self.model)
        # The decoder of a T5EncoderModel folder is absent on purpose: only the encoder is exported.
        check_missing_weights(folder, task, info, ignore=("decoder.", "lm_head.", "final_logits_bias") if encoder_only else ())
        if encoder_only:
            # T5Model/BartModel (and T5EncoderModel, which AutoModel loads as T5Model) need
            # decoder inputs no tokenizer makes; their features are the encoder's, as
            # sentence-transformers and T5EncoderModel compute them. T5's SDPA path does not
            # survive torch.export (see hf_seq2seq): eager attention is the same math.
            self.model.set_attn_implementation("eager")
            self.notes.append(f"{type(self.model).__name__} is an encoder-decoder model: feature-extraction exports "
                              "its encoder (last_hidden_state)")
            self.model = self.model.get_encoder().eval()
        self.input_names = self._input_names()
        self.input_specs = [InputSpec(n, ("batch", "sequence"), np.dtype(np.int64)) for n in self.input_names]
        if folder.pooling is not None:
            self.output_names = ["token_embeddings", "sentence_embedding"]
        else:
            self.output_names = list(_HEADS[task][1])
        self.token_outputs = tuple(n for n in self.output_names if n in TOKEN_LEVEL.get(task, ()))
        if task not in ("text-generation", "text2text-generation"):  # subclasses build their own step wrappers
            self.wrapper = _Wrapper(self.model, self.input_names, self.output_names, folder.pooling)

    def _input_names(self) -> list[str]:
        accepted = set(inspect.signature(self.model.forward).parameters)
        produced = set(getattr(self.tokenizer, "model_input_names", None) or _TEXT_INPUTS)
        names = [n for n in _TEXT_INPUTS if n in accepted and n in produced]
        if "input_ids" not in names or "attention_mask" not in names:
            raise UsageError(f"{self.folder.root.name}: the model or tokenizer takes no input_ids/attention_mask; "
                             "only text models are supported")
        return names

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(task=self.task, architecture=self.folder.architecture,
                 sentence_pooling=None if self.folder.pooling is None else vars(self.folder.pooling))
        return d

    def tokenize(self, texts: list[str]) -> Feeds:
        """The tokenizer's tensors for ``texts``, padded to the longest: padding is exercised."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens(self.tokenizer, self.folder.config),
                             return_tensors="np")
        return {n: np.asarray(enc[n], dtype=np.int64) for n in self.input_names}

    def predict(self, feeds: Feeds) -> Feeds:
        torch = require("torch", "torch")
        with torch.no_grad():
            out = self.wrapper(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names))
        return {n: t.detach().cpu().numpy() for n, t in zip(self.output_names, out)}

    def export(self, options: LoadOptions) -> ExportOutcome:
        torch = require("torch", "torch")
        example = self.tokenize(["a short one", "a second, somewhat longer sentence to pad against"])
        args = tuple(torch.from_numpy(example[n]) for n in self.input_names)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
        dynamic = tuple({0: batch, 1: seq} for _ in self.input_names)
        model, opset = self._dynamo_export(args, dynamic, options)
        return ExportOutcome(model=model, exporter="torch.onnx (dynamo)", opset=opset, notes=list(self.notes))

    def export_files(self, options: LoadOptions) -> list[tuple[str, ExportOutcome]]:
        """(file name, graph) of every ONNX file the output folder holds."""
        return [("model.onnx", self.export(options))]

    def _dynamo_export(self, args: tuple, dynamic_shapes: object, options: LoadOptions, *, wrapper=None,
                       input_names: list[str] | None = None,
                       output_names: list[str] | None = None) -> tuple[object, int | None]:
        """The wrapper (by default self.wrapper, with self's I/O names) through torch.onnx's
        torch.export-based exporter, quietly; one line on failure. Returns the model and its
        ai.onnx opset."""
        torch = require("torch", "torch")
        from onnxkit.frameworks.torch_fw import _conversion_error, _quiet

        with _quiet():
            try:
                program = torch.onnx.export(
                    wrapper or self.wrapper, args, input_names=input_names or self.input_names,
                    output_names=output_names or self.output_names,
                    opset_version=options.opset, dynamo=True, external_data=False, dynamic_shapes=dynamic_shapes,
                )
            except Exception as exc:  # the exporter raises many unrelated types
                raise _conversion_error(exc, "torch.export-based (dynamo)", options.opset) from exc
        if program is None:
            raise ConversionError("torch.onnx.export returned no program")
        model = program.model_proto
        return model, next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)


def max_tokens(tokenizer, config: dict) -> int | None:
    """The longest input the model takes: the tokenizer's limit, or the model's position table
    when that is shorter (a tokenizer copied from a bigger model says 512 where the table has
    128 rows, and a longer text crashed the reference)."""
    limits = [v for v in (getattr(tokenizer, "model_max_length", None), config.get("max_position_embeddings"),
                          config.get("n_positions"))
              if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 1 << 30]
    return min(limits) if limits else None


def check_missing_weights(folder: HFFolder, task: str, info: dict, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a head the checkpoint does not hold: transformers would initialize it randomly,
    and an export of random weights that matches itself would pass."""
    missing = [k for k in info.get("missing_keys") or () if not k.startswith(ignore)]
    if missing:
        arch = folder.architecture or folder.config.get("model_type")
        raise InputError(
            f"{folder.root.name} ({arch}) has no weights for {', '.join(sorted(missing)[:4])}"
            f"{f' and {len(missing) - 4} more' if len(missing) > 4 else ''}: the {task} model would be partly random",
            hint=f"export a folder trained for {task}, or pass the --task that {arch} was saved for",
        )


def _takes_decoder_inputs(model) -> bool:
    return hasattr(model, "get_encoder") and "decoder_input_ids" in inspect.signature(model.forward).parameters


def _wrapper_class():
    torch = require("torch", "torch")

    class Wrapper(torch.nn.Module):
        """Positional tensors in, a tuple of the task's outputs out: what the exporter needs
        (transformers' forward takes keywords and returns a ModelOutput)."""

        def __init__(self, model, input_names: list[str], output_names: list[str], pooling: SentencePooling | None) -> None:
            super().__init__()
            self.model = model
            self.input_names = list(input_names)
            self.output_names = list(output_names)
            self.pooling = pooling

        # Named parameters, not *args: torch.export matches dynamic shapes to them by name.
        def forward(self, input_ids, attention_mask, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            kwargs = {n: given[n] for n in self.input_names}
            out = self.model(**kwargs, return_dict=True)
            if self.pooling is None:
                return tuple(out[n] for n in self.output_names)
            tokens = out["last_hidden_state"]
            return tokens, _pool(torch, tokens, kwargs["attention_mask"], self.pooling)

    return Wrapper


def _Wrapper(model, input_names, output_names, pooling):
    return _wrapper_class()(model, input_names, output_names, pooling).eval()


def _pool(torch, tokens, attention_mask, pooling: SentencePooling):
    """sentence-transformers' Pooling (one mode) and Normalize, on the exported graph's tensors."""
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    if pooling.mode == "cls":
        emb = tokens[:, 0]
    elif pooling.mode == "max":
        emb = torch.where(mask > 0, tokens, torch.full_like(tokens, -1e9)).max(dim=1).values
    else:
        summed = (tokens * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1e-9)
        emb = summed / (count if pooling.mode == "mean" else torch.sqrt(count))
    if pooling.normalize:
        emb = torch.nn.functional.normalize(emb, p=2, dim=1)
    return emb


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' load reports and progress bars go to the debug log, not the user's terminal."""
    import io
    import warnings

    if logging.getLogger("onnxkit").isEnabledFor(logging.DEBUG):
        yield
        return
    buf = io.StringIO()
    # transformers' own handler holds the real stderr (redirecting sys.stderr misses it): its
    # load report of missing weights went to the terminal; check_missing_weights says it once.
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(buf), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
    if buf.getvalue().strip():
        log.debug("transformers output:\n%s", buf.getvalue())


def _load_errors() -> tuple[type[BaseException], ...]:
    """What transformers and safetensors raise on a file that is truncated, corrupt or not
    what its name says: the user's input, not a bug here."""
    # TypeError and ZeroDivisionError: config values of the wrong type or zero (a string
    # hidden_size, num_attention_heads 0) fail while the model is built; AttributeError: a
    # tokenizer_config.json or special_tokens_map.json that is a list, not an object.
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, RuntimeError, TypeError, ZeroDivisionError,
                                               AttributeError)
    try:
        from huggingface_hub.errors import StrictDataclassFieldValidationError

        errors += (StrictDataclassFieldValidationError,)
    except ImportError:
        pass
    try:
        from safetensors import SafetensorError

        errors += (SafetensorError,)
    except ImportError:
        pass
    return errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
