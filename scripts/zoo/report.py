"""docs/coverage.md from the zoo's records."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from collections import Counter
from pathlib import Path

from scripts.zoo.common import ATOL, REPO, RTOL
from scripts.zoo.judge import OUTCOMES

TITLES = {"torch": "PyTorch (plain torch architectures)", "transformers": "transformers (tiny configs)",
          "keras": "Keras", "sklearn": "scikit-learn", "boosters": "XGBoost and LightGBM"}

NOT_COVERED = """\
## What is not covered, and why

- **torchvision and timm.** torchvision's PyPI wheel is built against a torch other than the
  pinned `torch==2.13.0+cpu` and does not import beside it; the pairing that installs (torch
  2.14.1 + torchvision 0.29.1) is a 5.5 GB CUDA build, and measuring onnxkit on a torch it is not
  pinned to would say little about the tested set-up. timm needs torchvision. Their
  architectures' building blocks are covered in plain torch instead (the torch table:
  ResNet basic and bottleneck blocks with BatchNorm, MobileNetV2 inverted residuals, an
  EfficientNet MBConv with squeeze-excitation and SiLU, ConvNeXt blocks, DenseNet
  concatenation, a ViT, a U-Net decoder with ConvTranspose and bilinear upsampling, LSTM, GRU).
  To run them once torchvision is installable: add a family module beside `torch_zoo.py`.
- **scikit-learn estimators on text, dicts or targets** (CountVectorizer, TfidfVectorizer,
  DictVectorizer, FeatureHasher, LabelEncoder, LabelBinarizer): onnxkit's tabular route takes
  numeric feature matrices; they are listed as skipped.
- **scikit-learn estimators that share a converter**: skl2onnx converts two dozen linear
  regressors with one converter (and five linear classifiers, three SGD-style ones); a few
  representatives of each run (`REPRESENTATIVES` in `scripts/zoo/sklearn_zoo.py`), and close
  siblings stand for each other (ExtraTree for DecisionTree, NuSVC/NuSVR for SVC/SVR,
  MiniBatchKMeans for KMeans, BayesianGaussianMixture for GaussianMixture, the univariate
  selectors for SelectKBest, RFECV for RFE, RadiusNeighborsRegressor for the classifier:
  `SIBLINGS` there), so the full run stays near 25 minutes on a shared two-core machine.
- Keras DenseNet121 and ResNet50 run at 64x64 inputs, transformers at two layers and hidden size 32:
  the graphs have the real structure at a size the machine can export in a few seconds.
"""

HOW = f"""\
## How to read this page

Each model is built in code with random weights (no downloads), saved in the form a user hands
onnxkit, and then:

- **onnxkit**: `onnxkit export SOURCE -o m.onnx --json` in its own process; its verdict, exit
  code, and the worst max abs / max rel difference of its own validation. Its ONNX file is also
  run by hand with ONNX Runtime against the source on the zoo's inputs: a PASSED whose file
  differs by hand is reported as an onnxkit bug (a false PASSED).
- **raw**: the raw converter as its documentation says to call it (`torch.onnx.export(...,
  dynamo=True)`, `tf2onnx.convert.from_keras`, `skl2onnx.to_onnx` with `zipmap=False`,
  `onnxmltools.convert_xgboost` / `convert_lightgbm`), then the same by-hand comparison:
  batch sizes 1 and 8, allclose with atol {ATOL:g} and rtol {RTOL:g} (onnxkit's fp32 preset),
  labels exactly. `ok` = within tolerance, `differs` = out of it, `failed` = the converter raised.
- **outcome**: `same` (both fine), `onnxkit better` (onnxkit passes where the raw file differs
  or the raw converter fails), `both fail`, `expected refusal` (a file that holds code, refused
  without `--trust`), `onnxkit worse` (a refusal, failure or timeout where the raw converter
  works) and `onnxkit bug` (exit 70, a traceback, no JSON, or a false PASSED).
- Seconds are wall-clock on a shared machine and include process start-up and imports.

Re-run one row: `PYTHONPATH=. python scripts/zoo/run.py --family FAMILY --only MODEL`; keep its
files: `PYTHONPATH=. python scripts/zoo/one.py FAMILY MODEL --keep /tmp/zoo`.
"""


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _num(x) -> str:
    return "" if x is None else (f"{x:.2g}" if isinstance(x, float) else str(x))


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for pkg in ("onnx", "onnxruntime", "torch", "transformers", "tensorflow-cpu", "keras", "tf2onnx", "scikit-learn",
                "skl2onnx", "onnxmltools", "xgboost", "lightgbm"):
        try:
            parts.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)

# Why a model that is not "same" differs, from looking at each (the judge says what differs;
# this says why). Checked against the run before being written here: a row whose outcome
# changes keeps its explanation only while it still applies (see _why).
WHY = {
    ("transformers", "t5_encoder"): ("onnxkit better", "torch.onnx's dynamo export of the raw program fails to decompose the FX graph; "
                                     "onnxkit's route exports it"),
    ("keras", "mobilenet_v2"): ("both fail", "float32 round-off, not the export: TF's own float32 output is 3.7e-5 from a "
                                "float64 rebuild of the model, ONNX Runtime's 4.0e-5 (docs/validation.md); the fp32 preset is tuned "
                                "to catch a single weight moved by 1e-2 and is kept"),
    ("keras", "resnet50"): ("both fail", "float32 round-off, not the export: TF's own float32 output is 3.2e-4 from a float64 "
                            "rebuild of the model, ONNX Runtime's 2.7e-4 (docs/validation.md)"),
    ("keras", "densenet121"): ("both fail", "float32 round-off at the preset's edge, identical in both files"),
    ("keras", "efficientnet_b0"): ("both fail", "onnxkit validates on standard-normal inputs, where the pooled features reach 100 "
                                   "and TF's own float32 output is 2.0e-3 from a float64 rebuild (docs/validation.md); on pixel "
                                   "inputs both files are within 3.1e-5"),
    ("sklearn", "FunctionTransformer"): ("both fail", "skl2onnx converts only the identity FunctionTransformer; np.log1p has no converter"),
    ("sklearn", "GaussianProcessClassifier"): ("both fail", "skl2onnx converts only binary GaussianProcessClassifier (iris has 3 classes)"),
    ("sklearn", "NearestNeighbors"): ("both fail", "it has neither predict nor transform (kneighbors only), and skl2onnx refuses "
                                      "radius and n_neighbors set together"),
    ("sklearn", "OneHotEncoder"): ("both fail", "skl2onnx supports only string and int64 categories, not float ones"),
    ("sklearn", "RandomTreesEmbedding"): ("both fail", "its output is sparse; skl2onnx cannot convert sparse outputs"),
    ("sklearn", "TargetEncoder"): ("both fail", "skl2onnx's converter supports binary or 1-d regression targets only"),
    ("sklearn", "VotingClassifier"): ("both fail", "skl2onnx does not implement flatten_transform=True"),
    ("sklearn", "RadiusNeighborsClassifier"): ("both fail", "skl2onnx's graph pads each row's neighbour indices with -1, which "
                                               "ArrayFeatureExtractor rejects when rows have different neighbour counts: its file "
                                               "does not run in ONNX Runtime (onnxkit validates on stored training rows, so scikit-learn "
                                               "no longer refuses the inputs)"),
    ("sklearn", "MultiOutputClassifier"): ("onnxkit better", "skl2onnx gives the probabilities as a sequence of per-target "
                                           "tensors, which the by-hand check cannot stack into one array; onnxkit concatenates "
                                           "them into one [N, sum of classes] tensor and validates it"),
    ("sklearn", "IsolationForest"): ("onnxkit better", "skl2onnx refuses onnx's default ai.onnx.ml opset 4; onnxkit targets 3"),
    ("sklearn", "HistGradientBoostingClassifier"): ("onnxkit better", "onnxkit's own converter (skl2onnx 1.20 fails on "
                                                    "scikit-learn 1.9 HGB models)"),
    ("sklearn", "HistGradientBoostingRegressor"): ("onnxkit better", "onnxkit's own converter (skl2onnx 1.20 fails on "
                                                   "scikit-learn 1.9 HGB models)"),
    ("boosters", "xgb_rank_pairwise"): ("onnxkit better", "onnxmltools has no converter for XGBRanker; onnxkit converts "
                                        "the ranker's booster as a regressor that keeps its objective (the score is the "
                                        "raw margin)"),
}


def _why(r: dict) -> str:
    known = WHY.get((r["family"], r["model"]))
    return known[1] if known and known[0] == r["outcome"] else ""


def _row(r: dict) -> str:
    kit, raw = r.get("onnxkit", {}), r.get("raw", {})
    verdict = "" if not kit else f"{kit.get('verdict')} ({kit.get('exit_code')})"
    rawcol = raw.get("outcome", "")
    diff = r.get("difference", "")
    notes = "; ".join(r.get("notes") or [])
    if _why(r):
        diff = f"{diff} — why: {_why(r)}" if diff else f"why: {_why(r)}"
    if notes:
        diff = f"{diff} — {notes}" if diff else notes
    return "| " + " | ".join(_cell(c) for c in (
        r["model"], r.get("route", ""), verdict, _num(kit.get("max_abs")), _num(kit.get("max_rel")), _num(kit.get("seconds")),
        rawcol, _num(raw.get("max_abs")), _num(raw.get("seconds")), r["outcome"], diff)) + " |"


def _runs(runs: list[dict] | None) -> list[str]:
    """For a page merged from several runs: which rows each measured, on which commit, when."""
    if not runs or len(runs) < 2:
        return []
    out = ["Merged from these runs (a later run's rows replace an earlier one's):", ""]
    for run in runs:
        rows = run.get("rows", [])
        fams = sorted({r.split(" ", 1)[0] for r in rows})
        shown = ", ".join(rows) if len(rows) <= 12 else f"{len(rows)} rows of {', '.join(fams)}"
        out.append(f"- {run.get('when')}, commit `{run.get('commit')}`: {shown}")
    return out + [""]


def write_markdown(path: Path, records: list[dict], seconds: float, *, fast: bool, families: list[str],
                   runs: list[dict] | None = None) -> None:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git("rev-parse", "--short", "HEAD")
    # The page being rewritten is not a change to the code that measured.
    dirty = " (with uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no", "--", ".", f":!{path.name}", f":!*/{path.name}") else ""
    lines = [
        "# Coverage: onnxkit against the raw converters",
        "",
        f"Generated by `scripts/zoo/run.py{' --fast' if fast else ''}` on {now}, onnxkit commit `{commit}`{dirty}, "
        f"host `{platform.node()}` ({platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}); "
        f"{len(records)} models in {seconds / 60:.1f} minutes, one at a time"
        f"{_load(records)}.",
        "",
        f"Versions: {_versions()}.",
        "",
        *_runs(runs),
        "## Summary",
        "",
        "| family | models | " + " | ".join(OUTCOMES) + " |",
        "| --- | --- | " + " | ".join("---" for _ in OUTCOMES) + " |",
    ]
    for fam in families:
        rows = [r for r in records if r["family"] == fam]
        if rows:
            c = Counter(r["outcome"] for r in rows)
            lines.append(f"| {fam} | {len(rows)} | " + " | ".join(str(c.get(o, 0)) for o in OUTCOMES) + " |")
    lines += ["", HOW]
    bad = [r for r in records if r["outcome"] in ("onnxkit bug", "onnxkit worse")]
    lines += ["## Where onnxkit is behind the raw converter", ""]
    if bad:
        lines += ["By cause (the same message with the model's name taken out):", ""]
        lines += _grouped(bad) + ["", "Each, with the command that reproduces it:", ""]
    if not bad:
        lines.append("Nowhere in this run: onnxkit is at least as good as the raw converter on every model.")
    for r in bad:
        lines.append(f"- **{r['family']} {r['model']}** ({r['outcome']}): {_cell(r['difference'])}. "
                     f"Reproduce: `PYTHONPATH=. python scripts/zoo/one.py {r['family']} {r['model']} --keep /tmp/zoo` "
                     f"then `{(r.get('onnxkit') or {}).get('command', 'onnxkit export ...').replace('onnxkit export ', 'python -m onnxkit export /tmp/zoo/', 1)}`")
    lines.append("")
    for fam in families:
        rows = [r for r in records if r["family"] == fam]
        if not rows:
            continue
        lines += [f"## {TITLES.get(fam, fam)}", "",
                  "| model | route | onnxkit verdict (exit) | max abs | max rel | s | raw | raw max abs | raw s | outcome | difference and why |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [_row(r) for r in rows]
        lines.append("")
    lines.append(NOT_COVERED)
    path.write_text("\n".join(lines))


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _load(records: list[dict]) -> str:
    """How busy the machine was: seconds here mean little without it."""
    import os

    loads = [r["load"] for r in records if isinstance(r.get("load"), (int, float))]
    if loads:
        which = "the run" if len(loads) == len(records) else f"the {len(loads)} rows that recorded it"
        return f" (load average {sum(loads) / len(loads):.1f} on average during {which}; the seconds scale with it)"
    try:
        fifteen = os.getloadavg()[2]
    except OSError:
        return ""
    return f" (load average {fifteen:.1f} over the 15 minutes before this page was written; the seconds scale with it)"


def _grouped(rows: list[dict]) -> list[str]:
    import re

    groups: dict[str, list[str]] = {}
    for r in rows:
        reason = r["difference"].replace(r["model"], "<model>")
        # Type lists and values vary per model; the first clause names the cause.
        reason = re.split(r"(?<=does not trust): |; pass --trust|\. Please check", reason)[0]
        reason = re.sub(r"\[np\.float32\([^)]*\)\]|array\(\[[^]]*\]\)", "...", reason)[:150]
        groups.setdefault(reason, []).append(f"{r['family']} {r['model']}")
    return [f"- {len(models)} x {_cell(reason)}: {', '.join(models)}"
            for reason, models in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
