#!/usr/bin/env python3
"""Build the small real models used by the tests and the demo, deterministically.

    python scripts/make_fixtures.py [--out fixtures/generated] [--only torch,tensorflow,tabular]

Each framework's builders live in fixtures/<framework>_models.py; a framework that is not
installed is skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILDERS = {
    "torch": "fixtures.torch_models",
    "tensorflow": "fixtures.tensorflow_models",
    "tabular": "fixtures.tabular_models",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "fixtures" / "generated")
    ap.add_argument("--only", default=",".join(BUILDERS))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        if name not in BUILDERS:
            print(f"unknown builder {name!r}; choose from {', '.join(BUILDERS)}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(BUILDERS[name])
        except ImportError as exc:
            print(f"{name}: skipped ({exc.name} not installed)")
            continue
        folder = args.out / name
        folder.mkdir(exist_ok=True)
        built = module.build_all(folder)
        print(f"{name}: {len(built)} models in {time.perf_counter() - t0:.1f} s -> {folder}")
        for key, path in built.items():
            print(f"  {key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
