#!/usr/bin/env python
"""The main job on a fresh machine, end to end: build a small PyTorch model, let
`onnxkit init` write a config for it, run `onnxkit pipeline`, print the verdict and where
the reports are.

    python examples/run_demo.py [--model cnn|mlp] [--out DIR] [--keep]

The model is the small residual CNN (or the MLP) from fixtures/torch_models.py, saved as
a torch.export program (.pt2). Everything is written under --out (default: a fresh
temporary folder, kept so you can open the report). Exit code: the pipeline's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_model(kind: str, folder: Path) -> Path:
    """Write the fixture model as a .pt2 program; returns its path."""
    sys.path.insert(0, str(REPO))  # fixtures/ lives at the repository root, not in the package
    try:
        import torch

        from fixtures import torch_models as tm
    except ImportError as exc:
        sys.exit(f"the demo needs torch and the repository's fixtures/ ({exc}); run: pip install -c scripts/constraints.txt -e \".[all]\"")
    batch = torch.export.Dim("batch", min=1, max=4096)
    gen = torch.Generator().manual_seed(tm.SEED)
    if kind == "cnn":
        model, example, dyn = tm.build_cnn(), torch.randn(2, 3, 32, 32, generator=gen), {"image": {0: batch}}
    else:
        model, example, dyn = tm.build_mlp(), torch.randn(2, 8, generator=gen), {"x": {0: batch}}
    path = folder / f"{kind}.pt2"
    torch.export.save(tm.export_program(model, (example,), dyn), path)
    return path


def onnxkit(*args: str | Path) -> int:
    cmd = [sys.executable, "-m", "onnxkit", *map(str, args)]
    print("$ onnxkit " + " ".join(map(str, args)), flush=True)
    return subprocess.call(cmd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="which fixture model to run through the pipeline")
    ap.add_argument("--out", type=Path, default=None, help="working folder (default: a new temporary folder)")
    args = ap.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="onnxkit-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"building the {args.model} model in {out} ...", flush=True)
    source = build_model(args.model, out)
    config = out / "onnxkit.toml"
    code = onnxkit("init", source, "-o", config, "--force", "-q")
    if code:
        return code
    # Small bench settings keep the demo short on a 2-core machine; a real config keeps
    # the defaults init wrote.
    text = config.read_text()
    config.write_text(text.replace("iterations = 50", "iterations = 20"))
    code = onnxkit("pipeline", config, "--gate", "max_size_mb=5")
    report = out / "onnxkit-out" / "report"
    verdict = {0: "PASSED", 1: "FAILED (a step or gate failed)"}.get(code, f"ERROR (exit {code})")
    print()
    print(f"verdict:     {verdict}  ({time.perf_counter() - t0:.0f} s)")
    print(f"config:      {config}")
    print(f"artifacts:   {out / 'onnxkit-out'}")
    print(f"HTML report: {report / 'report.html'}")
    print(f"JUnit:       {report / 'junit.xml'}   Markdown: {report / 'summary.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
