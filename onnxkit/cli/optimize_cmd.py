"""onnxkit optimize MODEL.onnx -o OUT.onnx"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onnxkit.cli import common
from onnxkit.cli.app import app


def _list_passes() -> None:
    from onnxkit.passes import PRESETS, list_passes
    from onnxkit.results import Result, Table

    class _Listing(Result):
        def tables(self) -> list[Table]:
            rows = [[p.name, p.group, ", ".join(k for k, v in PRESETS.items() if p.name in v) or "-", p.description] for p in list_passes()]
            return [Table("Passes", ["name", "from", "presets", "what it does"], rows)]

        def to_dict(self) -> dict:
            d = super().to_dict()
            d["passes"] = [{"name": p.name, "group": p.group, "description": p.description} for p in list_passes()]
            d["presets"] = PRESETS
            return d

    common.emit(_Listing(command="optimize --list-passes"))


def _load_vs(vs: Path | None, output: Path, model: Path, data: Path | None, trust: bool):
    """--vs for --auto, loaded once the output path is known not to clash with what it reads."""
    if vs is None:
        return None
    from onnxkit.foundation.files import check_output_path
    from onnxkit.frameworks.base import LoadOptions
    from onnxkit.frameworks.registry import load_source

    check_output_path(output, model, data, vs, onnx=True)
    return load_source(str(vs), LoadOptions(trust=trust))


@app.command("optimize")
def optimize_command(
    model: Annotated[Path | None, typer.Argument(help="The ONNX model to optimize, or a folder exported from Hugging Face (every ONNX file in it).", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to write the optimized model.")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Pass preset: default (portable) or aggressive (adds ORT extended fusions). [default: default]", show_default=False)] = None,
    passes: Annotated[str | None, typer.Option("--passes", help="Comma-separated passes to run instead of the preset (see --list-passes).")] = None,
    list_passes: Annotated[bool, typer.Option("--list-passes", help="List the available passes and presets, then exit.")] = False,
    level: Annotated[str | None, typer.Option("--level", help="Also apply ONNX Runtime offline optimization: basic, extended or all (all ties the file to the provider and ORT version).")] = None,
    transformer: Annotated[str | None, typer.Option("--transformer", help="Transformer fusions: auto, bert, gpt2, bart, t5, vit, ...")] = None,
    num_heads: Annotated[int, typer.Option("--num-heads", help="Attention heads (0: detect from the graph).")] = 0,
    hidden_size: Annotated[int, typer.Option("--hidden-size", help="Hidden size (0: detect from the graph).")] = 0,
    fp16: Annotated[bool, typer.Option("--fp16", help="Convert weights and compute to float16 (float32 inputs/outputs kept).")] = False,
    opset: Annotated[int | None, typer.Option("--opset", help="Convert to this opset (onnx.version_converter).")] = None,
    tol: common.Tol = None,
    rtol: common.Rtol = None,
    no_validate: Annotated[bool, typer.Option("--no-validate", help="Do not compare the result with the input model.")] = False,
    auto: Annotated[bool, typer.Option("--auto", help="Try the presets and ORT levels (and transformer fusion on BERT-like graphs), keep those within fp32 tolerance, time them with the input on this machine and write the fastest.")] = False,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help="With --auto: batch sizes to time, e.g. 1,8; the largest decides. [default: 1,8]", show_default=False)] = None,
    data: Annotated[Path | None, typer.Option("--data", help="With --auto: inputs to validate the candidates on (.npz/.npy/.csv/.parquet); else seeded random inputs.")] = None,
    iterations: Annotated[int, typer.Option("--iterations", help="With --auto: timed runs per candidate and batch size.")] = 30,
    vs: Annotated[Path | None, typer.Option("--vs", help="With --auto: also time the source framework model and say when it is faster than ONNX.", show_default=False)] = None,
    hardware_specific: Annotated[bool, typer.Option("--allow-hardware-specific", help="With --auto: also try ORT level 'all' (the file then runs only on this CPU provider and ORT version).")] = False,
    threads: Annotated[int | None, typer.Option("--threads", help="With --auto: intra-op threads for the timing (as you will serve).", show_default=False)] = None,
    trust: common.Trust = False,
    json_out: common.Json = False,
    verbose: common.Verbose = False,
    quiet: common.Quiet = False,
) -> None:
    """Optimize an ONNX graph: fusions and eliminations, constant folding, shape inference,
    transformer fusions, ONNX Runtime offline optimization, fp16, opset conversion.

    The result is validated against the input: exit 1 when it is out of tolerance (the file is
    still written), 4 when a pass fails inside the library underneath.

    --auto builds each candidate, validates it against the input (fp32 tolerance), times the
    valid ones and the input together and writes the fastest; when nothing beats the input,
    OUT is the input unchanged and the report says so. A candidate that fails to build or is out
    of tolerance is listed, not fatal: --auto exits 0 whenever it wrote a model.
    """
    common.setup(json_out, verbose, quiet)
    if list_passes:
        _list_passes()
        return
    from onnxkit.errors import UsageError

    if model is None:
        raise UsageError("missing MODEL: the ONNX model to optimize")
    if output is None:
        raise UsageError("missing --output/-o: where to write the optimized model")
    names = [p.strip() for p in passes.split(",") if p.strip()] if passes is not None else None
    if passes is not None and not names:
        raise UsageError("--passes is empty; name at least one pass (see --list-passes)")
    from onnxkit.operations.optimize_ort import wants_ort

    if auto and wants_ort(output):
        raise UsageError("--auto writes an ONNX model; for the ORT format, optimize without --auto to -o model.ort")
    auto_only = {"--batch-size": batch_size is not None, "--data": data is not None, "--vs": vs is not None,
                 "--allow-hardware-specific": hardware_specific, "--threads": threads is not None}
    if auto:
        pinned = {"--preset": preset is not None, "--passes": names is not None, "--level": level is not None,
                  "--transformer": transformer is not None, "--fp16": fp16, "--opset": opset is not None,
                  "--no-validate": no_validate}
        clash = [k for k, v in pinned.items() if v]
        if clash:
            raise UsageError(f"--auto chooses the passes and level itself; drop {', '.join(clash)} or drop --auto")
        if model.is_dir():
            raise UsageError("--auto takes one ONNX file; optimize an exported folder without --auto")
        from onnxkit.operations.autotune import auto_optimize
        from onnxkit.operations.bench import parse_batch_sizes

        common.emit(auto_optimize(
            model, output, source=_load_vs(vs, output, model, data, trust), data=data, batch_sizes=parse_batch_sizes(batch_size or "1,8"), tol=tol, rtol=rtol,
            iterations=iterations, threads=threads, hardware_specific=hardware_specific, trust=trust, probe=not trust,
        ))
        return
    used = [k for k, v in auto_only.items() if v]
    if used:
        raise UsageError(f"{', '.join(used)} only applies with --auto")
    if wants_ort(output):
        from onnxkit.operations.optimize_ort import optimize_to_ort

        common.emit(optimize_to_ort(
            model, output, preset=preset, passes=names, level=level, transformer=transformer, num_heads=num_heads,
            hidden_size=hidden_size, fp16=fp16, opset=opset, tol=tol, rtol=rtol, validate=not no_validate, trust=trust,
            probe=not trust,
        ))
        return
    from onnxkit.operations.optimize import optimize_model

    common.emit(optimize_model(
        model, output, preset=preset, passes=names, level=level, transformer=transformer, num_heads=num_heads,
        hidden_size=hidden_size, fp16=fp16, opset=opset, tol=tol, rtol=rtol, validate=not no_validate, trust=trust, probe=not trust,
    ))
