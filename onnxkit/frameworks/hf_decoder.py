"""Decoder-only language models (text-generation) with a KV cache, in Optimum's layout.

One graph serves the first step (past length 0) and the later ones: it takes
``input_ids``, ``attention_mask`` (past + new tokens), ``position_ids`` and
``past_key_values.{i}.key/.value`` ``[batch, kv_heads, past, head_dim]``, and returns
``logits`` and ``present.{i}.key/.value``.
"""

from __future__ import annotations

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.spec import InputSpec
from onnxkit.errors import UsageError
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions
from onnxkit.frameworks.hf_fw import HFSource


class HFDecoderSource(HFSource):
    """A causal LM whose predict() is one decoding step through the cache."""

    def __init__(self, folder, task: str, trust: bool) -> None:
        super().__init__(folder, task, trust)
        cfg = self.model.config
        self.layers = int(cfg.num_hidden_layers)
        heads = int(cfg.num_attention_heads)
        self.kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        self.past_names = [f"past_key_values.{i}.{k}" for i in range(self.layers) for k in ("key", "value")]
        self.input_names = ["input_ids", "attention_mask", "position_ids", *self.past_names]
        ids = np.dtype(np.int64)
        self.input_specs = (
            [InputSpec("input_ids", ("batch", "sequence"), ids), InputSpec("attention_mask", ("batch", "total_sequence"), ids),
             InputSpec("position_ids", ("batch", "sequence"), ids)]
            + [InputSpec(n, ("batch", self.kv_heads, "past_sequence", self.head_dim), np.dtype(np.float32)) for n in self.past_names]
        )
        self.output_names = ["logits", *(f"present.{i}.{k}" for i in range(self.layers) for k in ("key", "value"))]
        self.token_outputs = ()
        self.wrapper = _decoder_wrapper(self.model, self.layers)

    def _input_names(self) -> list[str]:
        import inspect

        accepted = set(inspect.signature(self.model.forward).parameters)
        missing = {"input_ids", "attention_mask", "position_ids", "past_key_values"} - accepted
        if missing:
            raise UsageError(f"{self.folder.root.name}: this decoder's forward takes no {', '.join(sorted(missing))}; "
                             "text-generation export needs them")
        return ["input_ids", "attention_mask", "position_ids"]

    def first_step(self, prompt_ids: np.ndarray) -> Feeds:
        """Feeds of the first step: the whole prompt, an empty cache."""
        b, s = prompt_ids.shape
        feeds: Feeds = {
            "input_ids": prompt_ids.astype(np.int64), "attention_mask": np.ones((b, s), np.int64),
            "position_ids": np.broadcast_to(np.arange(s, dtype=np.int64), (b, s)).copy(),
        }
        feeds.update({n: np.zeros((b, self.kv_heads, 0, self.head_dim), np.float32) for n in self.past_names})
        return feeds

    def next_step(self, feeds: Feeds, outputs: Feeds, token: np.ndarray) -> Feeds:
        """Feeds of the step after ``feeds`` gave ``outputs`` and the chosen ``token`` [batch, 1]."""
        b = token.shape[0]
        past_len = feeds["attention_mask"].shape[1]
        nxt: Feeds = {
            "input_ids": token.astype(np.int64), "attention_mask": np.ones((b, past_len + 1), np.int64),
            "position_ids": np.full((b, 1), past_len, np.int64),
        }
        nxt.update({p: outputs[o] for p, o in zip(self.past_names, self.output_names[1:])})
        return nxt

    def predict(self, feeds: Feeds) -> Feeds:
        torch = require("torch", "torch")
        t = {n: torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names}
        with torch.no_grad():
            out = self.wrapper(t["input_ids"], t["attention_mask"], t["position_ids"], [t[n] for n in self.past_names])
        return {n: x.detach().cpu().numpy() for n, x in zip(self.output_names, out)}

    def generate(self, prompt_ids: np.ndarray, new_tokens: int) -> np.ndarray:
        """transformers' own greedy decoding: the reference for the token ids. A bare
        generation config: the folder's (repetition penalty, n-gram bans, a minimum length
        that masks EOS...) would change the scores that greedy decoding picks from. No EOS
        either: all ``new_tokens`` are decoded, EOS being one more token to agree on."""
        torch = require("torch", "torch")
        transformers = require("transformers", "transformers")
        pad = getattr(self.model.config, "pad_token_id", None)
        gen = transformers.GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=new_tokens, eos_token_id=None,
                                            pad_token_id=pad if pad is not None else 0)
        ids = torch.from_numpy(prompt_ids.astype(np.int64))
        # generate() fills unset fields from the model's own generation config, EOS included.
        saved_eos = self.model.generation_config.eos_token_id
        self.model.generation_config.eos_token_id = None
        try:
            with torch.no_grad():
                out = self.model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
        finally:
            self.model.generation_config.eos_token_id = saved_eos
        return out.numpy()

    def export(self, options: LoadOptions) -> ExportOutcome:
        torch = require("torch", "torch")
        # A non-empty past in the example so the exporter sees the cache path; the graph stays
        # generic in every length, so past length 0 runs through it too.
        gen = torch.Generator().manual_seed(0)
        b, s, p = 2, 3, 4
        ids = torch.randint(0, int(self.model.config.vocab_size), (b, s), generator=gen)
        mask = torch.ones(b, p + s, dtype=torch.long)
        pos = torch.arange(p, p + s).expand(b, s).contiguous()
        past = [torch.randn(b, self.kv_heads, p, self.head_dim, generator=gen) for _ in self.past_names]
        dyn = torch.export.Dim.DYNAMIC
        shapes = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn}, [{0: dyn, 2: dyn} for _ in self.past_names])
        model, opset = self._dynamo_export((ids, mask, pos, past), shapes, options)
        self._name_dims(model)
        return ExportOutcome(model=model, exporter="torch.onnx (dynamo)", opset=opset, notes=list(self.notes))

    def _name_dims(self, model) -> None:
        wanted = [("input_ids", 0, "batch"), ("input_ids", 1, "sequence"), ("attention_mask", 0, "batch"),
                  ("attention_mask", 1, "total_sequence"), ("position_ids", 0, "batch")]
        wanted += [(n, a, label) for n in self.past_names for a, label in ((0, "batch"), (2, "past_sequence"))]
        rename_dims(model, wanted)


def rename_dims(model, wanted: list[tuple[str, int, str]]) -> None:
    """The exporter names dynamic dims s10, s70...; give them the names a reader expects:
    ``wanted`` is (input name, axis, label). Symbols that must be equal (every past length,
    every batch) get one name."""
    import re

    graph = model.graph
    inputs = {i.name: i.type.tensor_type.shape.dim for i in graph.input}
    mapping: dict[str, str] = {}
    for name, axis, label in wanted:
        dims = inputs.get(name)
        if dims is not None and len(dims) > axis and dims[axis].dim_param:
            mapping[dims[axis].dim_param] = label
    if not mapping:
        return
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    for value in (*graph.input, *graph.output, *graph.value_info):
        for d in value.type.tensor_type.shape.dim:
            if d.dim_param:
                d.dim_param = symbol.sub(lambda m: mapping[m.group(1)], d.dim_param)


def _decoder_wrapper(model, layers: int):
    torch = require("torch", "torch")
    transformers = require("transformers", "transformers")

    class DecoderStep(torch.nn.Module):
        """Flat cache tensors in and out (transformers keeps them in a Cache object)."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = transformers.DynamicCache(config=self.inner.config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True, return_dict=True)
            present = []
            for layer in out.past_key_values.layers[:layers]:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return DecoderStep(model).eval()
