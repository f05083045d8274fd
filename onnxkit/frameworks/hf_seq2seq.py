"""Encoder-decoder language models (text2text-generation: T5, BART...) in Optimum's layout.

Three graphs, named and wired as Optimum writes them so its loaders take ours unchanged:

- ``encoder_model.onnx``: ``input_ids``, ``attention_mask`` -> ``last_hidden_state``;
- ``decoder_model.onnx`` (first step): ``encoder_attention_mask``, ``input_ids``,
  ``encoder_hidden_states`` -> ``logits``, ``present.{i}.decoder.key/.value`` and
  ``present.{i}.encoder.key/.value`` (the cross-attention keys, computed once);
- ``decoder_with_past_model.onnx`` (later steps): ``encoder_attention_mask``, ``input_ids``,
  ``past_key_values.{i}.decoder.key/.value``, ``past_key_values.{i}.encoder.key/.value`` ->
  ``logits``, ``present.{i}.decoder.key/.value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from onnxkit._lazy import require
from onnxkit.errors import UsageError
from onnxkit.foundation.spec import InputSpec
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions
from onnxkit.frameworks.hf_decoder import rename_dims
from onnxkit.frameworks.hf_fw import HFSource

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_PAST_FILE = "decoder_with_past_model.onnx"
SEQ2SEQ_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_PAST_FILE)


@dataclass
class Part:
    """One of the three graphs: its wrapper module and its I/O names."""
    file: str
    wrapper: object
    input_names: list[str]
    output_names: list[str]
    specs: list[InputSpec] = field(default_factory=list)


class HFSeq2SeqSource(HFSource):
    """An encoder-decoder LM; predict_part() runs one graph's torch twin on the same feeds."""

    def __init__(self, folder, task: str, trust: bool) -> None:
        super().__init__(folder, task, trust)
        cfg = self.model.config
        if not getattr(cfg, "is_encoder_decoder", False) or not hasattr(self.model, "get_encoder"):
            raise UsageError(f"{folder.root.name}: {folder.architecture or cfg.model_type} is not an encoder-decoder "
                             "model; text2text-generation needs one (T5, BART...)")
        # T5's SDPA path does not survive torch.export with dynamic shapes (a transposed
        # tensor gets viewed); eager attention is the same math and exports for all of them.
        self.model.set_attn_implementation("eager")
        self.input_names = ["input_ids", "attention_mask"]
        self.input_specs = [InputSpec(n, ("batch", "encoder_sequence_length"), np.dtype(np.int64)) for n in self.input_names]
        self.output_names = ["last_hidden_state"]
        self.token_outputs = ("last_hidden_state",)
        self.layers = _decoder_layers(cfg)
        self.self_names = [f"{{}}.{i}.decoder.{k}" for i in range(self.layers) for k in ("key", "value")]
        self.cross_names = [f"{{}}.{i}.encoder.{k}" for i in range(self.layers) for k in ("key", "value")]
        self.start_token = self._start_token()
        self.parts = {p.file: p for p in self._parts()}

    def _start_token(self) -> int:
        gen = getattr(self.model, "generation_config", None)
        for holder in (gen, self.model.config):
            value = getattr(holder, "decoder_start_token_id", None)
            if isinstance(value, int):
                return value
        raise UsageError(f"{self.folder.root.name}: config.json names no decoder_start_token_id; "
                         "the first decoder token is unknown")

    def _parts(self) -> list[Part]:
        past = [n.format("past_key_values") for n in _interleave(self.self_names, self.cross_names)]
        present_self = [n.format("present") for n in self.self_names]
        present_all = [n.format("present") for n in _interleave(self.self_names, self.cross_names)]
        return [
            Part(ENCODER_FILE, _encoder_wrapper(self.model), ["input_ids", "attention_mask"], ["last_hidden_state"]),
            Part(DECODER_FILE, _decoder_wrapper(self.model, self.layers, with_past=False),
                 ["encoder_attention_mask", "input_ids", "encoder_hidden_states"], ["logits", *present_all]),
            Part(DECODER_PAST_FILE, _decoder_wrapper(self.model, self.layers, with_past=True),
                 ["encoder_attention_mask", "input_ids", *past], ["logits", *present_self]),
        ]

    def part_for(self, feeds: Feeds) -> Part:
        """Which graph ``feeds`` are for, told by their names."""
        if "encoder_hidden_states" in feeds:
            return self.parts[DECODER_FILE]
        if "encoder_attention_mask" in feeds:
            return self.parts[DECODER_PAST_FILE]
        return self.parts[ENCODER_FILE]

    def predict(self, feeds: Feeds) -> Feeds:
        torch = require("torch", "torch")
        part = self.part_for(feeds)
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in part.input_names]
        if part.file == DECODER_PAST_FILE:
            args = [args[0], args[1], args[2:]]
        with torch.no_grad():
            out = part.wrapper(*args)
        if not isinstance(out, tuple):
            out = (out,)
        return {n: x.detach().cpu().numpy() for n, x in zip(part.output_names, out)}

    # --- greedy decoding, fed by whichever side drives it -------------------------------

    def first_step(self, encoder_feeds: Feeds, hidden: np.ndarray) -> Feeds:
        b = hidden.shape[0]
        return {"encoder_attention_mask": encoder_feeds["attention_mask"].astype(np.int64),
                "input_ids": np.full((b, 1), self.start_token, np.int64), "encoder_hidden_states": hidden}

    def next_step(self, feeds: Feeds, outputs: Feeds, token: np.ndarray) -> Feeds:
        """The with-past feeds after ``feeds`` gave ``outputs`` and the chosen ``token``. The
        cross-attention cache comes from the first step and is passed on unchanged."""
        nxt: Feeds = {"encoder_attention_mask": feeds["encoder_attention_mask"], "input_ids": token.astype(np.int64)}
        for n in self.self_names:
            nxt[n.format("past_key_values")] = outputs[n.format("present")]
        for n in self.cross_names:
            src = feeds.get(n.format("past_key_values"))
            nxt[n.format("past_key_values")] = src if src is not None else outputs[n.format("present")]
        return nxt

    def generate(self, encoder_feeds: Feeds, new_tokens: int) -> np.ndarray:
        """transformers' own greedy decoding under a bare generation config: the folder's
        (forced BOS/EOS, n-gram bans, minimum length, beams) would change what greedy picks.
        No EOS: all ``new_tokens`` are decoded."""
        torch = require("torch", "torch")
        transformers = require("transformers", "transformers")
        pad = getattr(self.model.config, "pad_token_id", None)
        bare = transformers.GenerationConfig(
            do_sample=False, num_beams=1, max_new_tokens=new_tokens, eos_token_id=None,
            decoder_start_token_id=self.start_token, pad_token_id=pad if pad is not None else 0,
        )
        saved = self.model.generation_config
        # generate() fills a given config's unset fields from the model's own one.
        self.model.generation_config = bare
        try:
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=torch.from_numpy(encoder_feeds["input_ids"].astype(np.int64)),
                    attention_mask=torch.from_numpy(encoder_feeds["attention_mask"].astype(np.int64)),
                    generation_config=bare, past_key_values=_empty_cache(self.model),
                )
        finally:
            self.model.generation_config = saved
        return out.numpy()

    # --- export ----------------------------------------------------------------------------

    def export(self, options: LoadOptions) -> ExportOutcome:
        return self.export_files(options)[0][1]

    def export_files(self, options: LoadOptions) -> list[tuple[str, ExportOutcome]]:
        torch = require("torch", "torch")
        dyn = torch.export.Dim.DYNAMIC
        gen = torch.Generator().manual_seed(0)
        # Distinct sizes (batch 2, encoder 7, decoder 3, past 5) so that no two dims are
        # mistaken for one; the graphs stay generic in every one of them.
        enc = self.tokenize(["a short one", "a second, somewhat longer sentence to pad against the first"])
        enc_args = tuple(torch.from_numpy(enc[n]) for n in ("input_ids", "attention_mask"))
        with torch.no_grad():
            hidden = self.parts[ENCODER_FILE].wrapper(*enc_args)
        b, e = hidden.shape[:2]
        ids = torch.randint(0, int(self.model.config.vocab_size), (b, 3), generator=gen)
        with torch.no_grad():
            first = self.parts[DECODER_FILE].wrapper(enc_args[1], ids, hidden)
        past = []
        for k, name in enumerate(self.parts[DECODER_FILE].output_names[1:]):
            shape = list(first[k + 1].shape)
            if ".decoder." in name:
                shape[2] = 5
            past.append(torch.randn(*shape, generator=gen))
        calls = [
            (ENCODER_FILE, enc_args, ({0: dyn, 1: dyn}, {0: dyn, 1: dyn})),
            (DECODER_FILE, (enc_args[1], ids, hidden), ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn})),
            (DECODER_PAST_FILE, (enc_args[1], ids[:, :2], past),
             ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, [{0: dyn, 2: dyn} for _ in past])),
        ]
        files = []
        for file, args, shapes in calls:
            part = self.parts[file]
            model, opset = self._dynamo_export(args, shapes, options, wrapper=part.wrapper,
                                               input_names=part.input_names, output_names=part.output_names)
            rename_dims(model, self._dim_names(part))
            files.append((file, ExportOutcome(model=model, exporter="torch.onnx (dynamo)", opset=opset,
                                              notes=list(self.notes))))
        return files

    def _dim_names(self, part: Part) -> list[tuple[str, int, str]]:
        """Optimum's names for the dynamic dims; later entries win where the exporter unified two."""
        wanted = [(n, 2, "past_decoder_sequence_length") for n in part.input_names if ".decoder." in n]
        wanted += [(n, 2, "encoder_sequence_length") for n in part.input_names if ".encoder." in n]
        wanted += [("input_ids", 1, "encoder_sequence_length" if part.file == ENCODER_FILE else "decoder_sequence_length"),
                   ("encoder_attention_mask", 1, "encoder_sequence_length"),
                   ("encoder_hidden_states", 1, "encoder_sequence_length"),
                   ("attention_mask", 1, "encoder_sequence_length")]
        wanted += [(n, 0, "batch_size") for n in part.input_names]
        return wanted


def _interleave(self_names: list[str], cross_names: list[str]) -> list[str]:
    """Per layer: decoder key, decoder value, encoder key, encoder value (Optimum's order)."""
    out = []
    for i in range(0, len(self_names), 2):
        out += [*self_names[i:i + 2], *cross_names[i:i + 2]]
    return out


def _decoder_layers(cfg) -> int:
    for attr in ("num_decoder_layers", "decoder_layers", "num_layers", "num_hidden_layers"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise UsageError(f"cannot tell how many decoder layers {cfg.model_type} has")


def _encoder_wrapper(model):
    torch = require("torch", "torch")

    class Encoder(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    return Encoder(model.get_encoder()).eval()


def _decoder_wrapper(model, layers: int, *, with_past: bool):
    torch = require("torch", "torch")
    from transformers.modeling_outputs import BaseModelOutput

    class DecoderStep(torch.nn.Module):
        """Flat cache tensors in and out (transformers keeps them in an EncoderDecoderCache)."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, encoder_attention_mask, input_ids, past_or_hidden):
            cfg = self.inner.config
            cache = _empty_cache(self.inner)
            if with_past:
                past = past_or_hidden
                for i in range(layers):
                    cache.self_attention_cache.update(past[4 * i], past[4 * i + 1], i)
                    cache.cross_attention_cache.update(past[4 * i + 2], past[4 * i + 3], i)
                    # Filled after construction: the constructor would test the (symbolic)
                    # cross length, and the cross keys are to be read, not recomputed.
                    cache.is_updated[i] = True
                # Read for its shape only: cross-attention takes its keys from the cache.
                hidden = past[2].new_zeros(()).expand(
                    encoder_attention_mask.shape[0], encoder_attention_mask.shape[1], _model_dim(cfg))
            else:
                hidden = past_or_hidden
            out = self.inner(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                             attention_mask=encoder_attention_mask, decoder_input_ids=input_ids,
                             past_key_values=cache, use_cache=True, return_dict=True)
            kv = out.past_key_values
            present = []
            for i in range(layers):
                present += [kv.self_attention_cache.layers[i].keys, kv.self_attention_cache.layers[i].values]
                if not with_past:
                    present += [kv.cross_attention_cache.layers[i].keys, kv.cross_attention_cache.layers[i].values]
            return (out.logits, *present)

    return DecoderStep(model).eval()


def _empty_cache(model):
    """An empty self- and cross-attention cache sized by the decoder's own config: T5's decoder
    stack has one (num_decoder_layers may differ from num_layers), and a cache sized from the
    top-level config runs out of layers (generate() itself does so on such an mT5)."""
    transformers = require("transformers", "transformers")
    cfg = getattr(model.get_decoder(), "config", model.config)
    return transformers.EncoderDecoderCache(transformers.DynamicCache(config=cfg), transformers.DynamicCache(config=cfg))


def _model_dim(cfg) -> int:
    for attr in ("d_model", "hidden_size"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int):
            return value
    raise UsageError(f"cannot tell the hidden size of {cfg.model_type}")
