"""An exported Hugging Face folder (``model.onnx`` beside config.json and the tokenizer
files, as ``onnxkit export`` and Optimum write it) read back, and its ONNX model used as
the reference of the next step: optimize and quantize compare their output with it on
text the folder's own tokenizer encodes, through the same task-aware checks as export."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import InputError, UnsafeInput, UsageError

MODEL_FILE = "model.onnx"
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
IMAGE_TASK = "image-classification"  # pixel_values in: checked on random inputs, no tokenizer
_TOKENIZER_VOCABS = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
# Decoders that bring no pad token: the end-of-sequence token pads, as transformers' pipelines do.
_PAD_FALLBACK = ("eos_token", "unk_token")


@dataclass
class ExportedFolder:
    root: Path
    onnx_files: list[str]            # names of the .onnx files at the top of the folder, sorted
    config: dict[str, Any]
    task: str
    side_files: list[str] = field(default_factory=list)  # everything else, copied beside the outputs

    def shape_from_config(self) -> dict[str, int]:
        """Heads, KV heads and hidden size as config.json states them (0 where it does not):
        fusion needs them, and a guess from the graph can be wrong."""
        cfg = self.config
        heads = _first_int(cfg, "num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads")
        hidden = _first_int(cfg, "hidden_size", "n_embd", "d_model", "dim")
        kv = _first_int(cfg, "num_key_value_heads") or heads
        return {"num_heads": heads, "hidden_size": hidden, "num_key_value_heads": kv}


def _first_int(cfg: dict, *keys: str) -> int:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


def read_exported_folder(path: Any, *, trust: bool, task: str | None = None) -> ExportedFolder:
    """The folder as data; nothing here runs its code. Exit 2 for what is not such a folder,
    5 for a folder that asks to run its own code (auto_map, .py files) without --trust."""
    from onnxkit.foundation.onnx_io import load_onnx
    from onnxkit.frameworks.hf_scan import HFFolder, read_json

    root = Path(str(path))
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    onnx_files = sorted(p.name for p in root.iterdir() if p.suffix == ".onnx" and p.is_file())
    if not onnx_files:
        hint = (f"onnxkit export {root} -o OUT/ first" if (root / "config.json").is_file()
                else "give a folder written by onnxkit export (or optimum-cli), or an ONNX file")
        raise InputError(f"{root} holds no .onnx file", hint=hint)
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{root} has no config.json beside its ONNX files; a folder written by onnxkit export "
                         "(or optimum-cli) carries it")
    config = read_json(cfg_path, f"config.json of {root.name}")
    if not isinstance(config, dict):
        raise InputError(f"{cfg_path} is not a transformers config (not a JSON object)")
    custom = [f"auto_map in {n}" for n in ("config.json", "tokenizer_config.json")
              if (root / n).is_file() and isinstance(d := (config if n == "config.json" else read_json(root / n, n)), dict)
              and d.get("auto_map")]
    custom += [p.name for p in sorted(root.glob("*.py"))[:3]]
    if custom and not trust:
        raise UnsafeInput(f"{root.name} carries its own code ({'; '.join(custom)}): its tokenizer would run it; "
                          "pass --trust only if you have read it")
    if task is None:
        main = root / (MODEL_FILE if MODEL_FILE in onnx_files else onnx_files[0])
        graph = load_onnx(main, trust=trust, load_external=False).model
        task = next((p.value for p in graph.metadata_props if p.key == "onnxkit.task"), None)
    if task is None:
        if not isinstance(config.get("model_type"), str):
            raise InputError(f"{cfg_path} is not a transformers config (no model_type)")
        try:
            task = HFFolder(root=root, model_dir=root, config=config, weights="").infer_task()
        except UsageError:
            raise UsageError(f"cannot tell the task of {root.name}: its model.onnx has no onnxkit.task metadata and "
                             "config.architectures names no head") from None
    if task == IMAGE_TASK:
        if not (root / "preprocessor_config.json").is_file():
            raise InputError(f"{root} has no preprocessor_config.json; an image-classification folder carries its "
                             "image processor")
    elif not any((root / n).is_file() for n in _TOKENIZER_VOCABS):
        raise InputError(f"{root} has no tokenizer files ({', '.join(_TOKENIZER_VOCABS)}); the text it is "
                         "checked on is encoded by the folder's own tokenizer")
    onnx_names = set(onnx_files)
    sides = sorted(p.name for p in root.iterdir() if p.is_file() and p.name not in onnx_names and not _is_data_of(p.name, onnx_files))
    return ExportedFolder(root=root, onnx_files=onnx_files, config=config, task=task, side_files=sides)


def _is_data_of(name: str, onnx_files: list[str]) -> bool:
    """External weight files travel with their model (the optimizers rewrite them)."""
    return any(name.startswith(f + ".") or name == f + "_data" or name == f + ".data" for f in onnx_files)


def load_tokenizer(root: Path):
    from onnxkit._lazy import require
    from onnxkit.frameworks.hf_fw import _quiet_transformers, offline

    transformers = require("transformers", "transformers")
    with offline(), _quiet_transformers():
        try:
            tok = transformers.AutoTokenizer.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
            # A vocabulary that loads may still fail on the first text (tokenizers raises a
            # bare Exception): try it now, as the user's file, not later as a crash.
            tok("A first check, with punctuation.")
        except Exception as exc:  # tokenizers and transformers raise many unrelated types on a bad file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise InputError(f"the tokenizer of {root.name} cannot be loaded: {first}") from None
    if tok.pad_token is None:
        for attr in _PAD_FALLBACK:
            if getattr(tok, attr, None) is not None:
                tok.pad_token = getattr(tok, attr)
                break
    return tok


def token_outputs(task: str, output_names: list[str]) -> tuple[str, ...]:
    from onnxkit.frameworks.hf_fw import TOKEN_LEVEL

    return tuple(n for n in output_names if n in TOKEN_LEVEL.get(task, ()))


class OnnxTextModel:
    """An ONNX model of an exported folder with the interface the text validation expects of a
    source (tokenize, predict, and for a decoder first_step / next_step / generate)."""

    framework = "onnxruntime"

    def __init__(self, folder: ExportedFolder, session, tokenizer=None) -> None:
        self.folder = folder
        self.task = folder.task
        self.session = session
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(folder.root)
        self.input_specs = list(session.input_specs)
        self.input_names = [s.name for s in self.input_specs]
        self.output_names = list(session.output_names)
        self.token_outputs = token_outputs(self.task, self.output_names)
        self.past_names = [n for n in self.input_names if n.startswith("past_key_values.")]
        if self.task == "text-generation":
            if "input_ids" not in self.input_names or not self.past_names:
                raise InputError(f"{folder.root.name}: a text-generation model.onnx takes input_ids and "
                                 "past_key_values.*; this one does not (exported without its cache?)")
            spec = next(s for s in self.input_specs if s.name == self.past_names[0])
            kv, hd = spec.shape[1], spec.shape[3]
            if not isinstance(kv, int) or not isinstance(hd, int):
                raise InputError(f"{folder.root.name}: {spec.name} has no fixed heads/head size {spec.shape}")
            self.kv_heads, self.head_dim = kv, hd
        elif "input_ids" not in self.input_names:
            raise InputError(f"{folder.root.name}: its ONNX model takes no input_ids; not a text model")

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        from onnxkit.frameworks.hf_fw import max_tokens

        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens(self.tokenizer, self.folder.config),
                             return_tensors="np")
        return {n: np.asarray(enc[n], dtype=np.int64) for n in TEXT_INPUTS if n in self.input_names and n in enc}

    def predict(self, feeds: dict) -> dict:
        return self.session.run(feeds)

    # ---------------------------------------------------------------- decoders

    def first_step(self, prompt_ids: np.ndarray) -> dict:
        b, s = prompt_ids.shape
        feeds = {"input_ids": prompt_ids.astype(np.int64), "attention_mask": np.ones((b, s), np.int64),
                 "position_ids": np.broadcast_to(np.arange(s, dtype=np.int64), (b, s)).copy()}
        feeds.update({n: np.zeros((b, self.kv_heads, 0, self.head_dim), np.float32) for n in self.past_names})
        return {k: v for k, v in feeds.items() if k in self.input_names}

    def next_step(self, feeds: dict, outputs: dict, token: np.ndarray) -> dict:
        b = token.shape[0]
        past_len = self.past_length(feeds)
        nxt = {"input_ids": token.astype(np.int64), "attention_mask": np.ones((b, past_len + 1), np.int64),
               "position_ids": np.full((b, 1), past_len, np.int64)}
        nxt.update({p: outputs[p.replace("past_key_values.", "present.", 1)] for p in self.past_names})
        return {k: v for k, v in nxt.items() if k in self.input_names}

    def past_length(self, feeds: dict) -> int:
        """Tokens seen so far: the cache's length plus the tokens of this step."""
        return int(feeds[self.past_names[0]].shape[2] + feeds["input_ids"].shape[1])

    def generate(self, prompt_ids: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy decoding through this model's own cache: the reference token ids."""
        feeds, seq = self.first_step(prompt_ids), prompt_ids.astype(np.int64)
        for _ in range(new_tokens):
            out = self.session.run(feeds)
            token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
            seq = np.concatenate([seq, token], axis=1)
            feeds = self.next_step(feeds, out, token)
        return seq
