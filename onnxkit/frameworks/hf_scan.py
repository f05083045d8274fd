"""A Hugging Face ``save_pretrained`` folder read as data: what it holds, which task it
serves and whether loading it would run code. Nothing here imports transformers."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxkit.errors import InputError, UnsafeInput, UsageError, offered

TASKS = ("feature-extraction", "text-classification", "token-classification", "fill-mask", "question-answering",
         "text-generation", "text2text-generation", "image-classification")
# Tasks the issue names that this version cannot export yet: a clear refusal beats a wrong graph.
PLANNED_TASKS: tuple[str, ...] = ()

# Suffix of config.architectures[0] -> task; longest suffixes first so "ForMaskedLM" wins over "Model".
_ARCH_SUFFIXES = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
    ("MTModel", "text2text-generation"),  # MarianMTModel: a translation model, not an encoder
    ("Model", "feature-extraction"),
)

# Files copied beside model.onnx so tokenizers and pipelines load the output folder unchanged.
SIDE_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "preprocessor_config.json",
)

_TOKENIZER_VOCABS = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
_ST_KNOWN = {
    "sentence_transformers.models.Transformer": "transformer",
    "sentence_transformers.models.Pooling": "pooling",
    "sentence_transformers.models.Normalize": "normalize",
}
_POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len")
_MAX_JSON = 16 << 20
_DEPTH_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers", "decoder_layers", "num_decoder_layers")
_MAX_LAYERS = 1024  # the deepest published transformers have a few hundred


def read_json(path: Path, what: str) -> Any:
    """A JSON file of the folder, bounded in size; malformed is exit 2 naming the file."""
    try:
        if path.stat().st_size > _MAX_JSON:
            raise InputError(f"{what} is over {_MAX_JSON >> 20} MiB; not a plausible {path.name}")
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply") from None
    except OSError as exc:
        raise InputError(f"cannot read {what}: {exc.strerror or exc}") from None


@dataclass
class SentencePooling:
    mode: str                  # one of _POOLING_MODES
    normalize: bool


@dataclass
class HFFolder:
    root: Path                 # the folder the user named
    model_dir: Path            # where config.json and the weights are (a sentence-transformers subfolder, or root)
    config: dict[str, Any]
    weights: str               # "safetensors" | "pytorch_bin"
    custom_code: list[str] = field(default_factory=list)
    pooling: SentencePooling | None = None

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        if isinstance(archs, str):  # a hand-written config: one name, not a list
            return archs
        return str(archs[0]) if isinstance(archs, list) and archs else ""

    def infer_task(self) -> str:
        if self.pooling is not None:
            return "feature-extraction"
        arch = self.architecture
        for suffix, task in _ARCH_SUFFIXES:
            if arch.endswith(suffix):
                return task
        raise UsageError(
            f"cannot tell the task of {self.root.name} (config.architectures is {arch or 'empty'}); "
            f"pass --task {'|'.join(TASKS)}",
        )


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").is_file() or (path / "modules.json").is_file())


def scan_folder(root: Path, trust: bool) -> HFFolder:
    """Read the folder as data; refuse (exit 5) what would run code unless ``trust``."""
    pooling = None
    model_dir = root
    if (root / "modules.json").is_file():
        model_dir, pooling = _scan_sentence_transformers(root, trust)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"{model_dir} has no config.json; not a transformers save_pretrained folder")
    config = read_json(cfg_path, f"{cfg_path.name} of {root.name}")
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise InputError(f"{cfg_path} is not a transformers config (no model_type)")
    _plausible_depth(config, cfg_path)
    custom = _custom_code(root, model_dir, config)
    if custom and not trust:
        raise UnsafeInput(
            f"{root.name} carries its own modeling code ({'; '.join(custom[:3])}): loading it runs that code; "
            "pass --trust only if you have read it",
        )
    weights = _weights_kind(model_dir, trust)
    return HFFolder(root=root, model_dir=model_dir, config=config, weights=weights, custom_code=custom, pooling=pooling)


def _plausible_depth(config: dict, cfg_path: Path) -> None:
    """transformers builds every layer the config names before it reads a weight: a config of
    a few bytes naming 10**9 layers held the machine for minutes and 16 GB before failing."""
    for key in _DEPTH_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > _MAX_LAYERS:
            raise InputError(f"{cfg_path.name}: {key} = {value} is not a plausible model (over {_MAX_LAYERS} layers)")


def check_preprocessing(folder: HFFolder, task: str) -> None:
    """The folder holds what makes the task's inputs: a tokenizer, or an image processor."""
    model_dir = folder.model_dir
    if task == "image-classification":
        if not (model_dir / "preprocessor_config.json").is_file():
            raise InputError(f"{model_dir.name} has no preprocessor_config.json; save the image processor into the "
                             "folder with image_processor.save_pretrained")
    elif not any((model_dir / n).is_file() for n in _TOKENIZER_VOCABS):
        # transformers would build an empty tokenizer (special tokens only): every word [UNK],
        # a validation that checks nothing and an output folder no one can tokenize for.
        raise InputError(f"{model_dir.name} has no tokenizer files ({', '.join(_TOKENIZER_VOCABS)}); "
                         "save the tokenizer into the folder with tokenizer.save_pretrained")


def _custom_code(root: Path, model_dir: Path, config: dict) -> list[str]:
    found: list[str] = []
    for where in {root, model_dir}:
        for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
            p = where / name
            data = config if p == model_dir / "config.json" else (read_json(p, name) if p.is_file() else None)
            if isinstance(data, dict) and data.get("auto_map"):
                found.append(f"auto_map in {p.relative_to(root)}")
    found.extend(f"{p.relative_to(root)}" for p in sorted(root.rglob("*.py"))[:5])
    return found


def check_links(root: Path, files: list[Path], trust: bool) -> None:
    """Refuse (exit 5) a file about to be copied into the output folder that is a link to
    outside ``root``: a ``vocab.txt`` linked to a private key would be published with the
    export. A hub cache snapshot's links into its own ``blobs/`` are what the hub writes."""
    if trust:
        return
    base = root.resolve()
    blobs = _hub_blobs(base)
    for p in files:
        if not p.is_symlink():
            continue
        target = p.resolve()
        if not target.is_relative_to(base) and not (blobs is not None and target.is_relative_to(blobs)):
            raise UnsafeInput(f"{p.relative_to(root)} in {root.name} is a link to {target}, outside the folder; it "
                              "would be copied into the output",
                              hint="copy the file into the folder" + (", or pass --trust if it is meant to be there"
                                                                      if offered("--trust") else ""))


def _hub_blobs(base: Path) -> Path | None:
    """``models--org--name/blobs`` when ``base`` is one of its ``snapshots/REV`` folders."""
    if base.parent.name == "snapshots" and (base.parent.parent / "blobs").is_dir():
        return (base.parent.parent / "blobs").resolve()
    return None


def _shards_inside(model_dir: Path) -> None:
    """A sharded index names its files; one outside the folder would be read as weights."""
    index = read_json(model_dir / "model.safetensors.index.json", "model.safetensors.index.json")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError("model.safetensors.index.json has no weight_map of tensor names to shard files")
    for shard in sorted(set(weight_map.values())):
        _inside(model_dir, shard, "model.safetensors.index.json", trustable=True)


def _weights_kind(model_dir: Path, trust: bool) -> str:
    if (model_dir / "model.safetensors.index.json").is_file() and not trust:
        _shards_inside(model_dir)
    if (model_dir / "model.safetensors").is_file() or (model_dir / "model.safetensors.index.json").is_file():
        return "safetensors"
    if (model_dir / "pytorch_model.bin").is_file() or (model_dir / "pytorch_model.bin.index.json").is_file():
        if not trust:
            raise UnsafeInput(
                f"{model_dir.name} holds its weights only as pytorch_model.bin, a pickle (unpickling can run code); "
                "convert them to safetensors, or pass --trust",
            )
        return "pytorch_bin"
    raise InputError(f"{model_dir} has no model.safetensors (or sharded model.safetensors.index.json) weights")


def _inside(root: Path, rel: str, what: str, *, trustable: bool = False) -> Path:
    base = root.resolve()
    p = (base / rel).resolve()
    blobs = _hub_blobs(base)
    if not p.is_relative_to(base) and not (blobs is not None and p.is_relative_to(blobs)):
        hint = None
        if trustable:
            hint = "copy the file into the folder" + (", or pass --trust if reading it from there is intended"
                                                      if offered("--trust") else "")
        raise UnsafeInput(f"{what} points outside the model folder: {rel!r}", hint=hint)
    return p


def _scan_sentence_transformers(root: Path, trust: bool) -> tuple[Path, SentencePooling | None]:
    modules = read_json(root / "modules.json", "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InputError("modules.json is not a list of modules")
    kinds: list[tuple[str, Path]] = []
    for m in modules:
        mtype = str(m.get("type", ""))
        if mtype not in _ST_KNOWN:
            if not mtype.startswith("sentence_transformers.") and not trust:
                raise UnsafeInput(f"modules.json names module {mtype!r}, code outside sentence-transformers; "
                                  "pass --trust only if you have read it")
            raise UsageError(f"modules.json: module {mtype!r} is not supported (supported: Transformer, Pooling, Normalize)")
        kinds.append((_ST_KNOWN[mtype], _inside(root, str(m.get("path", "")), f"modules.json module {m.get('name')!r}")))
    order = [k for k, _ in kinds]
    if not order or order[0] != "transformer" or order.count("transformer") != 1:
        raise UsageError(f"modules.json: expected a Transformer module first, then Pooling/Normalize; got {order}")
    model_dir = kinds[0][1]
    if "pooling" not in order:
        return model_dir, None
    pool_dir = kinds[order.index("pooling")][1]
    cfg = read_json(pool_dir / "config.json", f"{pool_dir.name}/config.json") if (pool_dir / "config.json").is_file() else {}
    modes = [mode for mode in _POOLING_MODES if cfg.get(f"pooling_mode_{mode}_tokens" if mode != "cls" else "pooling_mode_cls_token")]
    other = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v and k not in
             {"pooling_mode_cls_token", *(f"pooling_mode_{m}_tokens" for m in _POOLING_MODES[1:])}]
    if len(modes) != 1 or other:
        raise UsageError(f"{pool_dir.name}/config.json: pooling {modes + other or 'none'} is not supported "
                         f"(one of {', '.join(_POOLING_MODES)})")
    return model_dir, SentencePooling(mode=modes[0], normalize="normalize" in order[order.index("pooling"):])
