"""``onnxkit bench OUT/ [OUT-INT8/] --vs HF_FOLDER``: exported Hugging Face folders timed on
text their tokenizer encodes. An encoder is timed on a padded batch of sentences (or on
``--seq`` tokens); a decoder through its KV cache: the prompt of ``--context`` tokens in
one run, then ``--new-tokens`` greedy steps whose per-token time is reported apart, so a
cache that is not used (each step re-reading the whole context) shows as per-token time
growing with the context."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit.errors import UsageError
from onnxkit.operations.hf_folder_ref import IMAGE_TASK, MODEL_FILE, OnnxTextModel, load_tokenizer, read_exported_folder
from onnxkit.results import Result, Table, fmt_num
from onnxkit.runtime.bench import BenchEntry

DEFAULT_CONTEXTS = (16, 256)
DEFAULT_NEW_TOKENS = 16
DEFAULT_DECODE_ROUNDS = 10
# Enough varied words that a long context is not one sentence repeated back to back.
_FILLER = ("The committee met on Tuesday to review the budget, and after a long discussion about schools, roads and "
           "the new library, it agreed to publish its findings before the end of the month. ")


def parse_contexts(text: str | None) -> tuple[tuple[int, ...], bool]:
    """(contexts, given): the default is filtered to what the model fits; given ones are not."""
    if text is None:
        return DEFAULT_CONTEXTS, False
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise UsageError(f"malformed --context {text!r}; expected positive token counts such as 16,256")
    return tuple(sorted(set(values))), True


@dataclass
class DecodeEntry(BenchEntry):
    """One timed phase of a decoder: the prompt, or one greedy step, at one context length.
    A BenchEntry, so the pipeline's gates and reports read it as any other timing row."""
    phase: str = "prompt"
    context: int = 0
    tokens_per_s: float = 0.0


@dataclass
class DecodeBenchResult(Result):
    command: str = "bench"
    models: list[str] = field(default_factory=list)
    source: str | None = None
    task: str = "text-generation"
    batch_size: int = 1
    new_tokens: int = DEFAULT_NEW_TOKENS
    rounds: int = DEFAULT_DECODE_ROUNDS
    threads: int | None = None
    entries: list[DecodeEntry] = field(default_factory=list)
    cache_scaling: dict[str, float] = field(default_factory=dict)  # model -> per-token p50 at max / min context

    def tables(self) -> list[Table]:
        rows = [[e.name, e.phase, e.context, e.batch_size, fmt_num(e.stats.p50_ms),
                 "-" if not e.stats.p50_ci95 else f"{e.stats.p50_ci95[0]:.3f}-{e.stats.p50_ci95[1]:.3f}",
                 fmt_num(e.stats.p90_ms), f"{e.tokens_per_s:,.0f}"] for e in self.entries]
        title = (f"Latency in ms through the KV cache ({self.rounds} rounds after 1 warm-up, ONNX models interleaved, "
                 "the source after them; "
                 f"per-token = one greedy step, mean of {self.new_tokens} steps per round)")
        tables = [Table(title, ["model", "phase", "context", "batch", "p50", "p50 95% CI", "p90", "tokens/s"], rows)]
        if self.cache_scaling:
            tables.append(Table("Per-token latency, longest context / shortest", ["model", "ratio"],
                                [[m, f"{r:.2f}x"] for m, r in self.cache_scaling.items()]))
        return tables


FOLDER_OPTIONS = ("--text", "--seq", "--context", "--new-tokens")


def bench_if_folders(models: list, *, texts: list[str] | None, seq: int | None, context: str | None,
                     new_tokens: int | None, **options: Any) -> Result | None:
    """The bench of exported Hugging Face folders, or None when MODELS are ONNX files (then the
    folder-only options are refused)."""
    if any(Path(str(m)).is_dir() for m in models):
        return bench_folders(models, texts=texts, seq=seq, context=context, new_tokens=new_tokens, **options)
    used = [f for f, v in zip(FOLDER_OPTIONS, (texts, seq, context, new_tokens)) if v]
    if used:
        raise UsageError(f"{', '.join(used)} {'apply' if len(used) > 1 else 'applies'} to exported Hugging Face folders (onnxkit export HF_FOLDER -o OUT/), "
                         "not to ONNX files")
    return None


def bench_folders(models: list, *, source: Any = None, texts: list[str] | None = None, batch_sizes: Any = None,
                  seq: int | None = None, context: str | None = None, new_tokens: int | None = None,
                  iterations: int | None = None, warmup: int = 5, threads: Any = None, trust: bool = False,
                  timeout: float | None = None, unsupported: dict[str, object] | None = None, names: list[str] | None = None,
                  **_ignored: Any) -> Result:
    """``source``: the Hugging Face folder (a path, or already loaded); ``names``: one per
    folder, for the rows (default FOLDER/model.onnx)."""
    from onnxkit.operations.bench import parse_batch_sizes, parse_threads

    for flag, value in (unsupported or {}).items():
        if value:
            raise UsageError(f"{flag} does not apply when benchmarking Hugging Face folders")
    if not all(Path(str(m)).is_dir() for m in models):
        raise UsageError("give either exported folders or ONNX files to bench, not both")
    folders = [read_exported_folder(m, trust=trust) for m in models]
    tasks = {f.task for f in folders}
    if len(tasks) > 1:
        raise UsageError(f"the folders serve different tasks ({', '.join(sorted(tasks))}); time them in separate runs")
    if IMAGE_TASK in tasks:
        raise UsageError("bench times a folder on tokenized text; an image-classification folder has no tokenizer",
                         hint=f"time its file on random pixel_values: onnxkit bench {folders[0].root / MODEL_FILE}")
    if "text2text-generation" in tasks:
        raise UsageError("bench does not time an encoder-decoder folder yet (its encoder and decoders run together "
                         "in a generation loop)",
                         hint=f"time one of its files on random inputs: onnxkit bench {folders[0].root / folders[0].onnx_files[0]}")
    for f in folders:
        if MODEL_FILE not in f.onnx_files:
            raise UsageError(f"{f.root} holds no {MODEL_FILE}; bench times the model.onnx of each folder")
    if texts is not None and any(not t.strip() for t in texts):
        raise UsageError("--text: an empty sentence; give real text")
    threads = parse_threads(threads)
    if threads == "auto":
        raise UsageError("--threads auto is not available for Hugging Face folders; give a count")
    sizes = parse_batch_sizes(batch_sizes)
    if seq is not None and seq < 2:
        raise UsageError(f"--seq {seq}: give at least 2 tokens")
    positions = folders[0].config.get("max_position_embeddings") or folders[0].config.get("n_positions")
    if seq is not None and isinstance(positions, int) and seq > positions:
        raise UsageError(f"--seq {seq}: the model takes at most {positions} tokens (config.json)")
    task = tasks.pop()
    src = _load_source(source, task, trust) if source is not None else None
    names = list(names or [f"{f.root.name}/{MODEL_FILE}" for f in folders])
    if task == "text-generation":
        if texts or seq is not None:
            raise UsageError("a text-generation folder is timed at --context tokens; --text and --seq apply to encoders")
        if len(sizes) > 1:
            raise UsageError("give one --batch-size for a text-generation folder")
        return _bench_decoder(folders, src, contexts=parse_contexts(context), new_tokens=new_tokens or DEFAULT_NEW_TOKENS,
                              batch=sizes[0], rounds=iterations or DEFAULT_DECODE_ROUNDS, threads=threads, trust=trust,
                              timeout=timeout, names=names)
    if context is not None or new_tokens is not None:
        raise UsageError(f"--context and --new-tokens apply to text-generation; these folders' task is {task}")
    return _bench_encoder(folders, src, texts=texts, sizes=sizes, seq=seq, iterations=iterations, warmup=warmup,
                          threads=threads, trust=trust, timeout=timeout, names=names)


def _load_source(source: Any, task: str, trust: bool):
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.hf_fw import load

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as run_bench: PyTorch threads sleep between calls
    return load(source, LoadOptions(trust=trust, task=task)) if isinstance(source, (str, os.PathLike)) else source


def _encoder_feeds(ref: OnnxTextModel, texts: list[str] | None, sizes: list[int], seq: int | None) -> dict[int, dict]:
    from onnxkit.operations.hf_validate import DEFAULT_TEXTS

    pool = list(texts or DEFAULT_TEXTS)
    out = {}
    for b in ([len(pool)] if texts and sizes == [1] else sizes):
        rows = [pool[i % len(pool)] for i in range(b)]
        if seq is None:
            out[b] = ref.tokenize(rows)
        else:
            # Real words up to exactly ``seq`` tokens: long text truncated, the special tokens kept.
            enc = ref.tokenizer([r + " " + _FILLER * (seq // 8 + 1) for r in rows], padding="max_length",
                                truncation=True, max_length=seq, return_tensors="np")
            out[b] = {n: np.asarray(enc[n], np.int64) for n in ref.input_names if n in enc}
    return out


def _bench_encoder(folders, src, *, texts, sizes, seq, iterations, warmup, threads, trust, timeout, names) -> Result:
    from onnxkit.runtime.bench import _adapt_feeds, bench_models

    paths = [f.root / MODEL_FILE for f in folders]
    ref = OnnxTextModel(folders[0], _Specs(paths[0]))
    feeds_by_batch = _encoder_feeds(ref, texts, sizes, seq)
    if not trust:
        from onnxkit.runtime.contained import rehearse

        for p in paths:
            rehearse(p, feeds_by_batch, _adapt_feeds, threads=threads if isinstance(threads, int) else None, timeout_s=timeout)
    result = bench_models([str(p) for p in paths], feeds_by_batch, threads=threads, warmup=warmup,
                          iterations=iterations or 50, source=src, trust=trust,
                          names=names)
    shapes = ", ".join(f"batch {b}: {next(iter(f.values())).shape[1]} tokens" for b, f in sorted(feeds_by_batch.items()))
    what = f"{len(texts)} --text sentence(s)" if texts else "built-in sentences of different lengths"
    result.notes.append(f"inputs: {what} tokenized by {folders[0].root.name}'s tokenizer"
                        + (f", cut or padded to --seq {seq}" if seq else ", padded to the longest") + f" ({shapes})")
    return result


class _Specs:
    """The input and output names of a model, read from its graph without running it (the
    untrusted model runs only contained until its timing inputs have been rehearsed)."""

    def __init__(self, path: Path) -> None:
        from onnxkit.foundation.onnx_io import load_onnx
        from onnxkit.foundation.spec import specs_from_onnx

        graph = load_onnx(path, load_external=False).model
        self.input_specs = specs_from_onnx(graph)
        self.output_names = [o.name for o in graph.graph.output]

    def run(self, feeds: dict) -> dict:  # pragma: no cover - never timed; tokenizing needs names only
        raise RuntimeError("not runnable")


def _prompt(ref: OnnxTextModel, tokens: int, batch: int) -> np.ndarray:
    # The filler is about 40 tokens: enough repeats, not so many that the tokenizer warns of length.
    ids = ref.tokenizer(_FILLER * (tokens // 30 + 1), return_tensors="np")["input_ids"][0][:tokens]
    return np.broadcast_to(np.asarray(ids, np.int64), (batch, tokens)).copy()


def _max_positions(config: dict) -> int | None:
    for k in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        if isinstance(config.get(k), int) and config[k] > 0:
            return int(config[k])
    return None


def _bench_decoder(folders, src, *, contexts: tuple[tuple[int, ...], bool], new_tokens: int, batch: int, rounds: int,
                   threads: int | None, trust: bool, timeout: float | None, names: list[str]) -> DecodeBenchResult:
    from onnxkit.runtime.session import make_session

    if new_tokens < 1:
        raise UsageError(f"--new-tokens {new_tokens}: give a positive number")
    if rounds < 3:
        raise UsageError("give at least 3 --iterations (timed rounds) for a text-generation folder")
    wanted, given = contexts
    limit = _max_positions(folders[0].config)
    res = DecodeBenchResult(models=[str(f.root) for f in folders], batch_size=batch, new_tokens=new_tokens, rounds=rounds,
                            threads=threads)
    fits = [c for c in wanted if limit is None or c + new_tokens <= limit]
    if len(fits) < len(wanted):
        over = [c for c in wanted if c not in fits]
        if given:
            raise UsageError(f"--context {','.join(map(str, over))} + --new-tokens {new_tokens} exceeds the model's "
                             f"{limit} positions (config.json)")
        res.notes.append(f"context {','.join(map(str, over))} skipped: with {new_tokens} new tokens it exceeds the model's "
                         f"{limit} positions")
    if not fits:
        raise UsageError(f"no context fits the model's {limit} positions with {new_tokens} new tokens; give --context")
    tokenizer = load_tokenizer(folders[0].root)
    refs = []
    for f, name in zip(folders, names):
        path = f.root / MODEL_FILE
        if not trust:
            _rehearse_decoder(f, path, tokenizer, fits, new_tokens, batch, timeout)
        refs.append((name, "onnx", OnnxTextModel(f, make_session(path, threads=threads,
                                                                                           spinning=False), tokenizer)))
    if src is not None:
        res.source = f"transformers {src.folder.root.name}"
        if threads:
            import torch

            torch.set_num_threads(threads)
        refs.append((f"{src.folder.root.name} (transformers)", "transformers", src))
    for c in fits:
        _time_context(res, refs, _prompt(refs[0][2], c, batch), new_tokens, rounds)
    for name, _, _ in refs:
        per = {e.context: e.stats.p50_ms for e in res.entries if e.name == name and e.phase == "per-token decode"}
        if len(per) > 1 and per[min(per)] > 0:
            res.cache_scaling[name] = per[max(per)] / per[min(per)]
    top = max(fits)
    for name, ratio in res.cache_scaling.items():
        at = {e.phase: e.stats.p50_ms for e in res.entries if e.name == name and e.context == top}
        # Facts only: under load a few rounds can swing the ratio; the prompt time is the
        # yardstick of a step that would recompute the whole context.
        res.notes.append(f"{name}: a decoding step at context {top} takes {ratio:.2f}x the time of one at {min(fits)} "
                         f"({at['per-token decode']:.3g} ms; the prompt of {top} tokens: {at['prompt']:.3g} ms)")
    return res


def _decode_loop(model, prompt: np.ndarray, new_tokens: int):
    """(prompt call, decode call): the prompt through an empty cache; then ``new_tokens``
    greedy steps from the prompt's cache, computed once, so each round decodes the same."""
    first = model.first_step(prompt)
    out = model.predict(first)
    token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    start = model.next_step(first, out, token)

    def prompt_call():
        return model.predict(first)

    def decode_call():
        feeds = start
        for _ in range(new_tokens):
            o = model.predict(feeds)
            t = o["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
            feeds = model.next_step(feeds, o, t)

    return prompt_call, decode_call


def _time_context(res: DecodeBenchResult, refs: list, prompt: np.ndarray, new_tokens: int, rounds: int) -> None:
    from onnxkit.runtime.timing import LatencyStats, Runner, time_round_robin

    ctx, batch = prompt.shape[1], prompt.shape[0]
    prompt_runners, decode_runners = [], []
    for name, kind, model in refs:
        p_call, d_call = _decode_loop(model, prompt, new_tokens)
        prompt_runners.append(Runner(name, kind, p_call, is_source=kind != "onnx"))
        decode_runners.append(Runner(name, kind, d_call, is_source=kind != "onnx"))
    # The ONNX models interleave with each other; the source is timed apart, after them:
    # PyTorch between two ONNX steps evicts their weights and cache from the CPU caches and
    # inflated their per-token time at context 256 (measured 1.54x that at 16, against 1.10x
    # without it, on a 4-layer Llama).
    for runners in (prompt_runners, decode_runners):
        for group in ([r for r in runners if not r.is_source], [r for r in runners if r.is_source]):
            if group:
                time_round_robin(group, warmup=1, iterations=rounds, duration=None)
    for phase, runners, per_call in (("prompt", prompt_runners, 1), ("per-token decode", decode_runners, new_tokens)):
        for r in runners:
            stats = LatencyStats.from_times([t / per_call for t in r.times], batch)
            tokens = batch * (ctx if phase == "prompt" else 1)
            res.entries.append(DecodeEntry(r.name, r.kind, batch, stats, is_source=r.is_source, phase=phase, context=ctx,
                                           tokens_per_s=tokens * 1000.0 / stats.p50_ms if stats.p50_ms > 0 else float("inf")))


def _rehearse_decoder(folder, path: Path, tokenizer, contexts: list[int], new_tokens: int, batch: int,
                      timeout: float | None) -> None:
    """The untrusted decoder runs first, contained, on the very prompts and steps timed below."""
    from onnxkit.runtime.contained import ContainedSession

    with ContainedSession(path, timeout_s=timeout) as sess:
        ref = OnnxTextModel(folder, sess, tokenizer)
        for c in contexts:
            ref.generate(_prompt(ref, c, batch), new_tokens + 2)  # the prompt, the first token, the timed steps
