"""Hugging Face transformers built from tiny configs (random weights, nothing downloaded),
captured with torch.export and saved as .pt2, the form onnxkit takes without --input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts.zoo.common import SEED, Case

FAMILY = "transformers"
VOCAB = 100
SEQ = 16
TEXT = ["bert", "distilbert", "roberta", "electra", "gpt2", "t5_encoder", "llama", "clip_text"]
CATALOG = TEXT + ["vit", "wav2vec2", "whisper_encoder"]
FAST = ["bert", "vit"]


def catalog() -> list[str]:
    return list(CATALOG)


def _model(name: str):
    import transformers as tf

    small = dict(num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_size=32)
    if name == "bert":
        return tf.BertModel(tf.BertConfig(vocab_size=VOCAB, max_position_embeddings=64, **small))
    if name == "distilbert":
        return tf.DistilBertModel(tf.DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64))
    if name == "roberta":
        return tf.RobertaModel(tf.RobertaConfig(vocab_size=VOCAB, max_position_embeddings=70, pad_token_id=1, **small))
    if name == "electra":
        return tf.ElectraModel(tf.ElectraConfig(vocab_size=VOCAB, embedding_size=16, max_position_embeddings=64, **small))
    if name == "gpt2":
        return tf.GPT2Model(tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64, use_cache=False))
    if name == "t5_encoder":
        return tf.T5EncoderModel(tf.T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2))
    if name == "llama":
        return tf.LlamaModel(tf.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_cache=False))
    if name == "clip_text":
        return tf.CLIPTextModel(tf.CLIPTextConfig(vocab_size=VOCAB, max_position_embeddings=64, eos_token_id=2, **small))
    if name == "vit":
        return tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, **small))
    if name == "wav2vec2":
        return tf.Wav2Vec2Model(tf.Wav2Vec2Config(conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                                                  num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **small))
    if name == "whisper_encoder":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(tf.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                                               num_mel_bins=16, max_source_positions=50))
    raise KeyError(name)


def _inputs(name: str, b: int, seq: int = SEQ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED + b)
    if name == "vit":
        return {"pixel_values": rng.standard_normal((b, 3, 32, 32)).astype(np.float32)}
    if name == "wav2vec2":
        return {"input_values": rng.standard_normal((b, 1600)).astype(np.float32)}
    if name == "whisper_encoder":
        return {"input_features": rng.standard_normal((b, 16, 100)).astype(np.float32)}
    ids = rng.integers(3, VOCAB, size=(b, seq)).astype(np.int64)
    ids[:, -1] = 2  # an end-of-text token, which CLIP pools at
    return {"input_ids": ids, "attention_mask": np.ones((b, seq), dtype=np.int64)}


def _flat(out) -> list[np.ndarray]:
    items = out.to_tuple() if hasattr(out, "to_tuple") else (out if isinstance(out, (tuple, list)) else (out,))
    flat: list[np.ndarray] = []
    for item in items:
        if isinstance(item, (tuple, list)):
            flat += _flat(item)
        elif item is not None:
            flat.append(item.detach().numpy())
    return flat


def build(name: str, workdir: Path) -> Case:
    import torch

    torch.manual_seed(SEED)
    model = _model(name).eval()
    example = {k: torch.from_numpy(v) for k, v in _inputs(name, 2).items()}
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("seq", min=2, max=64)
    dyn = {k: ({0: batch, 1: seq} if name in TEXT else {0: batch}) for k in example}
    notes: list[str] = []
    try:
        program = torch.export.export(model, (), example, dynamic_shapes=dyn, strict=False)
    except Exception as exc:  # some models specialise the sequence length while tracing
        if name not in TEXT:
            raise
        dyn = {k: {0: batch} for k in example}
        program = torch.export.export(model, (), example, dynamic_shapes=dyn, strict=False)
        notes.append(f"sequence length fixed at {SEQ}: torch.export refused it dynamic ({type(exc).__name__})")
    dynamic_seq = not notes
    src = workdir / f"{name}.pt2"
    torch.export.save(program, src)

    def raw_export(out: Path) -> None:
        torch.onnx.export(model, (), str(out), kwargs=example, dynamo=True, dynamic_shapes=dyn, input_names=list(example))

    def inputs(b: int) -> list[np.ndarray]:
        return list(_inputs(name, b, SEQ if b == 1 or not dynamic_seq else 11).values())

    def reference(xs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return _flat(model(**{k: torch.from_numpy(x) for k, x in zip(example, xs)}))

    return Case(FAMILY, name, ".pt2", [str(src)], raw_export, inputs, reference, notes=notes)
