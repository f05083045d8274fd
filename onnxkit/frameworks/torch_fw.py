"""PyTorch sources: torch.export programs (.pt2), TorchScript, Python factories with a
state_dict, and (only with --trust) whole pickled modules.

Everything torch-specific lives here, including the quirks of its two ONNX exporters:
the torch.export-based one (``dynamo=True``) and the older TorchScript-based one.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import pickle
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from onnxkit._lazy import require
from onnxkit.foundation.files import preflight, read_head
from onnxkit.foundation.spec import SPEC_FORM, InputSpec
from onnxkit.errors import ConversionError, InputError, OnnxkitError, UnsafeInput, UsageError
from onnxkit.frameworks.base import ExportOutcome, Feeds, LoadOptions, SourceModel
from onnxkit.frameworks.torch_errors import _conversion_error, _first_line, _quiet
from onnxkit.frameworks.torch_pt2 import _load_pt2, audit_pt2  # noqa: F401  (audit_pt2: kept importable from here)

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
# Example sizes for dynamic dims while tracing: not 0 or 1 (torch.export specializes
# those), and different from each other so unrelated dims are not mistaken as equal.
EXAMPLE_BATCH = 2
EXAMPLE_SEQ = 7


def _torch():
    return require("torch")


# ---------------------------------------------------------------- loading

def load(source: str | Path, options: LoadOptions) -> SourceModel:
    """Load a PyTorch source: a .pt2 program, TorchScript, a factory or a pickled module."""
    from onnxkit.frameworks.registry import is_factory_ref

    if options.exporter not in EXPORTERS:
        raise UsageError(f"unknown exporter {options.exporter!r}; choose from {', '.join(EXPORTERS)}")
    s = str(source)
    if is_factory_ref(s):
        return _load_factory(s, options)
    path = preflight(source, what="source")
    kind = _sniff(path)
    if kind == "pt2":
        return _load_pt2(path, options)
    if kind == "torchscript":
        return _load_torchscript(path, options)
    return _load_pickle(path, options)


def _sniff(path: Path) -> str:
    """pt2 | torchscript | pickle, from the archive's member names alone."""
    head = read_head(path, 4)
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            raise InputError(f"{path.name} looks like a ZIP archive but is corrupt or truncated") from None
        if any(re.search(r"(^|/)models/[^/]+\.json$", n) or n.endswith("serialized_exported_program.json") for n in names):
            return "pt2"
        # TorchScript archives carry their code; torch.save archives only the pickle. Either
        # sign is enough: torch.load hands any archive with a constants.pkl to torch.jit.load.
        if any("/code/" in n or n.startswith("code/") for n in names) or any(
            n == "constants.pkl" or n.endswith("/constants.pkl") for n in names
        ):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "pickle"
        raise InputError(f"{path.name} is a ZIP archive but not a PyTorch file (no data.pkl, code/ or models/)")
    if head[:1] == b"\x80":  # torch.save's legacy (pre-1.6) format is a bare pickle stream
        return "pickle"
    raise InputError(f"{path.name} is not a PyTorch file (expected a .pt2 program, TorchScript or torch.save archive)")


def _need_inputs(what: str, options: LoadOptions) -> list[InputSpec]:
    if not options.inputs:
        raise UsageError(
            f"{what} does not record its input shapes; pass --input {SPEC_FORM.split(', e.g. ')[0]} "
            f"for each input (e.g. --input x:[batch,3,224,224]:float32)",
        )
    return list(options.inputs)


def _load_factory(ref: str, options: LoadOptions) -> TorchSource:
    torch = _torch()
    target, func_name = ref.rsplit(":", 1)
    specs = _need_inputs(f"the factory {ref}", options)
    if target.endswith(".py"):
        file = preflight(target, what="factory file")
        mod_name = f"_onnxkit_factory_{abs(hash(str(file.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, file)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {file} as a Python module")
        module = importlib.util.module_from_spec(spec)
        # The factory's own folder goes on sys.path so its sibling imports resolve.
        sys.path.insert(0, str(file.resolve().parent))
        try:
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        except OnnxkitError:
            raise
        except Exception as exc:
            raise InputError(f"importing {file} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(file.resolve().parent))
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise InputError(f"cannot import module {target!r}: {exc}") from exc
    func = getattr(module, func_name, None)
    if not callable(func):
        raise InputError(f"{target} has no function {func_name!r}")
    try:
        model = func()
    except Exception as exc:
        raise InputError(f"{ref}() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{ref}() returned {type(model).__name__}, not a torch.nn.Module")
    notes = []
    if options.weights is not None:
        _load_weights(model, Path(options.weights))
    else:
        notes.append("no --weights (--random-weights): the model was exported with the weights the factory built it with")
    path = Path(target) if target.endswith(".py") else Path(target.replace(".", "/"))
    return TorchSource(model.eval(), path, specs, options, kind="factory", notes=notes)


def _load_weights(model, weights: Path) -> None:
    torch = _torch()
    weights = preflight(weights, what="weights file")
    try:
        # weights_only is passed explicitly: an explicit True cannot be flipped by
        # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, while the default can.
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeInput(
            f"{weights.name} holds pickled Python objects besides tensors; onnxkit loads weights with "
            f"weights_only=True and never unpickles code ({_first_line(exc)})",
            hint="save only the tensors: torch.save(model.state_dict(), path)",
        ) from exc
    except Exception as exc:
        raise InputError(f"cannot read {weights.name} as PyTorch weights: {_first_line(exc)}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # training checkpoints (Lightning and friends) nest it
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{weights.name} is not a state_dict (a dict of tensor names to tensors)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        res = model.load_state_dict(state, strict=False) if "size mismatch" not in str(exc) else None
        if res is None:
            raise InputError(f"{weights.name} does not fit the factory's model: {_first_line(exc)}") from exc
        parts = []
        if res.missing_keys:
            parts.append(f"missing {', '.join(res.missing_keys[:5])}" + (" ..." if len(res.missing_keys) > 5 else ""))
        if res.unexpected_keys:
            parts.append(f"unexpected {', '.join(res.unexpected_keys[:5])}" + (" ..." if len(res.unexpected_keys) > 5 else ""))
        raise InputError(f"{weights.name} does not fit the factory's model: {'; '.join(parts)}") from exc


_TORCHSCRIPT_HAZARD = (
    "is a TorchScript archive: loading it runs the TorchScript code stored in it, which can create "
    "or overwrite files (torch.from_file) and run anything the archive's author wrote"
)
_TORCHSCRIPT_ALTERNATIVE = (
    "save a torch.export program instead (torch.export.save(torch.export.export(model, args), 'model.pt2')), "
    "or the weights with the code that builds the model (torch.save(model.state_dict(), 'state.pt'), then "
    "onnxkit export models.py:build --weights state.pt), or pass --trust if you vouch for this file"
)


def _load_torchscript(path: Path, options: LoadOptions) -> TorchSource:
    # Refused before torch is imported: an audit of TorchScript's code would have to prove
    # a whole language safe, and torch.jit.load runs __setstate__ while loading.
    if not options.trust:
        raise UnsafeInput(f"{path.name} {_TORCHSCRIPT_HAZARD}", hint=_TORCHSCRIPT_ALTERNATIVE)
    torch = _torch()
    specs = _need_inputs(f"the TorchScript file {path.name}", options)
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InputError(f"cannot load {path.name} as TorchScript: {_first_line(exc)}") from exc
    return TorchSource(model.eval(), path, specs, options, kind="torchscript")


def _load_pickle(path: Path, options: LoadOptions) -> TorchSource:
    torch = _torch()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not options.trust:
            raise UnsafeInput(
                f"{path.name} is a pickled PyTorch module; unpickling runs code. Save a state_dict "
                f"(torch.save(model.state_dict())) or a torch.export program (.pt2), or pass --trust if you vouch for this file",
            ) from exc
        obj = None
    except Exception as exc:
        raise InputError(f"cannot read {path.name} with torch.load: {_first_line(exc)}") from exc
    if obj is not None:
        if isinstance(obj, dict):
            raise UsageError(
                f"{path.name} holds weights only (a state_dict), not a model; pass the code that builds the model "
                f"as a factory: onnxkit export model.py:build --weights {path.name} --input ...",
            )
        raise InputError(f"{path.name} holds a {type(obj).__name__}, not a PyTorch model")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # --trust given: the user vouches
    except Exception as exc:
        raise InputError(
            f"cannot unpickle {path.name}: {_first_line(exc)} (the classes it was saved from must be importable here)",
        ) from exc
    if not isinstance(obj, torch.nn.Module):
        raise InputError(f"{path.name} holds a {type(obj).__name__}, not a torch.nn.Module")
    specs = _need_inputs(f"the pickled module {path.name}", options)
    return TorchSource(obj.eval(), path, specs, options, kind="pickled module")


# ---------------------------------------------------------------- the source model

class TorchSource(SourceModel):
    framework = "torch"

    def __init__(
        self,
        module,
        path: Path,
        specs: list[InputSpec],
        options: LoadOptions,
        *,
        kind: str,
        program=None,
        notes: list[str] | None = None,
    ) -> None:
        torch = _torch()
        self.module = module
        self.program = program
        self.path = path
        self.kind = kind
        self.input_specs = specs
        self.framework_version = str(torch.__version__)
        self.load_notes = list(notes or [])
        self._out_tree = None
        # A program exported with kwargs= (GPT-2's attention_mask follows past_key_values)
        # must be called with those names as keywords.
        self._kwarg_names = _program_kwarg_names(program) if program is not None else []
        self.output_names = self._output_names(options)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["kind"] = self.kind
        return d

    # -- running

    def _example_feeds(self) -> Feeds:
        """Example inputs for tracing: ones for integer inputs (a safe token id, a full
        attention mask), seeded normals for floats."""
        from onnxkit.frameworks.torch_smoke import example_feeds

        return example_feeds(self.input_specs, EXAMPLE_BATCH, EXAMPLE_SEQ)

    def _args(self, feeds: Feeds) -> tuple:
        torch = _torch()
        missing = [s.name for s in self.input_specs if s.name not in feeds]
        if missing:
            raise InputError(f"no data for input(s) {', '.join(missing)} of {self.path.name}")
        return tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in self.input_specs)

    def _forward(self, args: tuple):
        torch = _torch()
        try:
            n_pos = len(args) - len(self._kwarg_names)
            kwargs = dict(zip(self._kwarg_names, args[n_pos:]))
            with torch.inference_mode(), _quiet():
                return self.module(*args[:n_pos], **kwargs)
        except OnnxkitError:
            raise
        except Exception as exc:
            raise InputError(f"the PyTorch model failed on these inputs: {type(exc).__name__}: {_first_line(exc)}") from exc

    def _flatten(self, out) -> list[tuple[str, Any]]:
        torch = _torch()
        from torch.utils import _pytree as pytree

        leaves, _ = pytree.tree_flatten_with_path(out)
        named = []
        for keypath, leaf in leaves:
            if not isinstance(leaf, torch.Tensor):
                continue
            keys = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in keypath]
            named.append(("_".join(keys), leaf))
        return named

    def _probe(self):
        """One forward on example inputs. Without a recorded signature (anything but a
        .pt2, whose --input dtypes were checked against it), an input dtype the model's
        weights contradict is reported as that usage error rather than as PyTorch's."""
        from onnxkit.frameworks.torch_dtypes import dtype_contradiction, promoted_by_input

        feeds = self._example_feeds()
        if self.program is not None:
            return self._forward(self._args(feeds))
        try:
            out = self._forward(self._args(feeds))
        except InputError as exc:
            problem = dtype_contradiction(self, feeds, exc)
            if problem is not None:
                raise problem from exc
            raise
        problem = promoted_by_input(self, [t for _, t in self._flatten(out)])
        if problem is not None:
            raise problem
        return out

    def _output_names(self, options: LoadOptions) -> list[str]:
        flat = self._flatten(self._probe())
        if not flat:
            raise InputError(f"{self.path.name}: the model returns no tensors")
        if options.output_names:
            if len(options.output_names) != len(flat):
                raise UsageError(
                    f"{len(options.output_names)} output names given but the model returns {len(flat)} tensors",
                )
            # ONNX names each value once: an output named like an input, or twice, is an invalid graph.
            inputs = {sp.name for sp in self.input_specs}
            clash = sorted({n for n in options.output_names if n in inputs or options.output_names.count(n) > 1})
            if clash:
                raise UsageError(f"--output-names {', '.join(clash)}: each output needs a name of its own, not an input's "
                                 f"({', '.join(sorted(inputs))}) or another output's")
            return list(options.output_names)
        # A dict output keeps its keys; positions get output_0..N.
        if all(k and not k.isdigit() for k, _ in flat):
            return [k for k, _ in flat]
        return [f"output_{i}" for i in range(len(flat))]

    def predict(self, feeds: Feeds) -> Feeds:
        flat = self._flatten(self._forward(self._args(feeds)))
        if len(flat) != len(self.output_names or []):
            raise InputError(f"the model returned {len(flat)} tensors, expected {len(self.output_names or [])}")
        return {n: t.detach().cpu().numpy() for n, (_, t) in zip(self.output_names or [], flat)}

    # -- exporting

    def export(self, options: LoadOptions) -> ExportOutcome:
        exporter = options.exporter or "auto"
        if exporter not in EXPORTERS:
            raise UsageError(f"unknown exporter {exporter!r}; choose from {', '.join(EXPORTERS)}")
        notes = list(self.load_notes)
        if exporter == "auto" and self.kind == "torchscript":
            # torch.onnx's torch.export-based path refuses ScriptModules outright.
            notes.append("TorchScript source: used the TorchScript exporter (the torch.export-based one does not take ScriptModules)")
            exporter = "torchscript"
        if exporter in ("auto", "dynamo"):
            try:
                model = self._export_dynamo(options.opset)
                self._check_other_sizes(model)
                return self._outcome(model, "torch.onnx (dynamo)", notes)
            except ConversionError as exc:
                if exporter == "dynamo":
                    raise
                log.debug("dynamo exporter failed, falling back", exc_info=True)
                notes.append(
                    f"the torch.export-based exporter failed ({getattr(exc, 'detail', exc)}); used the TorchScript exporter instead",
                )
        model = self._export_torchscript(options.opset)
        return self._outcome(model, "torch.onnx (torchscript)", notes)

    def _check_other_sizes(self, model) -> None:
        """A graph whose inputs are dynamic but that only runs at the traced sizes is a failed
        conversion, not a model the user's inputs break: say so here so ``auto`` can fall back."""
        from onnxkit.frameworks.torch_smoke import baked_size_failure

        why = baked_size_failure(model, self.input_specs, self.predict, EXAMPLE_BATCH + 1, EXAMPLE_SEQ + 4)
        if why is not None:
            err = ConversionError(f"torch: {why}; try --exporter torchscript, or give the dynamic dims fixed sizes in --input")
            err.detail = why  # type: ignore[attr-defined]
            raise err

    def _outcome(self, model, exporter: str, notes: list[str]) -> ExportOutcome:
        opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
        return ExportOutcome(model=model, exporter=exporter, opset=opset, notes=notes)

    def _export_dynamo(self, opset: int | None):
        torch = _torch()
        require("onnxscript")
        if self.program is None:
            args = self._args(self._example_feeds())
            auto = torch.export.Dim.DYNAMIC
            dyn = tuple({i: auto for i, d in enumerate(s.shape) if not isinstance(d, int)} or None for s in self.input_specs)
            model = self._onnx_export(self.module, args, None if all(d is None for d in dyn) else dyn, opset)
        else:
            try:
                model = self._onnx_export(self.program, (), None, opset)
            except ConversionError as first:
                # torch.onnx's decomposition of a loaded program can fail where torch.export's
                # default decompositions succeed (T5: a view of a transposed tensor).
                log.debug("exporting the program failed; retrying after run_decompositions()", exc_info=True)
                try:
                    with _quiet():
                        decomposed = self.program.run_decompositions()
                    model = self._onnx_export(decomposed, (), None, opset)
                except Exception:
                    raise first from None
        self._fix_names(model)
        return model

    def _onnx_export(self, target, args: tuple, dyn, opset: int | None):
        torch = _torch()
        names = [s.name for s in self.input_specs]
        try:
            with _quiet():
                program = torch.onnx.export(
                    target, args, None, input_names=names, output_names=self.output_names,
                    opset_version=opset, dynamo=True, external_data=False, dynamic_shapes=dyn,
                    optimize=True, verbose=False, report=False,
                )
            return program.model_proto
        except OnnxkitError:
            raise
        except Exception as exc:
            raise _conversion_error(exc, "torch.export-based (dynamo)", opset) from exc

    def _export_torchscript(self, opset: int | None):
        torch = _torch()
        onnx = require("onnx")
        names = [s.name for s in self.input_specs]
        args = self._args(self._example_feeds())
        module = self.module
        if self.program is not None:
            # The module rebuilt from a program refuses train(False), which the TorchScript
            # exporter calls on the model it is given.
            module = _Opaque(self.module)
        dynamic_axes = {s.name: {i: d if isinstance(d, str) else f"{s.name}_dim{i}" for i, d in enumerate(s.shape) if not isinstance(d, int)} for s in self.input_specs}
        dynamic_axes = {k: v for k, v in dynamic_axes.items() if v}
        with tempfile.TemporaryDirectory(prefix="onnxkit-torch-") as tmp:
            dest = Path(tmp) / "model.onnx"
            try:
                with _quiet(), torch.no_grad():
                    torch.onnx.export(
                        module, args, str(dest), input_names=names, output_names=self.output_names,
                        opset_version=opset, dynamo=False, dynamic_axes=dynamic_axes or None,
                        do_constant_folding=True, verbose=False,
                    )
            except OnnxkitError:
                raise
            except Exception as exc:
                raise _conversion_error(exc, "TorchScript", opset) from exc
            # Load with external data pulled into memory: the temp folder goes away.
            model = onnx.load(str(dest), load_external_data=True)
        self._fix_names(model)
        return model

    def _fix_names(self, model) -> None:
        """Give the ONNX file the spec's dim names and check that every dim meant to be
        dynamic is symbolic; an exporter that baked a size in fails here."""
        rename: dict[str, str] = {}
        graph_inputs = {vi.name: vi for vi in model.graph.input}
        for spec in self.input_specs:
            vi = graph_inputs.get(spec.name)
            if vi is None:
                raise ConversionError(
                    f"the exported ONNX has no input {spec.name!r} (it has {', '.join(graph_inputs) or 'none'})",
                )
            dims = vi.type.tensor_type.shape.dim
            for i, want in enumerate(spec.shape):
                if isinstance(want, int) or i >= len(dims):
                    continue
                d = dims[i]
                if d.HasField("dim_value"):
                    err = ConversionError(
                        f"torch: dimension {i} of input {spec.name!r} was meant to be dynamic but the exporter fixed it to "
                        f"{d.dim_value} (the model's code treats that size as a constant); try --exporter torchscript, or "
                        f"give that dim a fixed size in --input",
                    )
                    err.detail = f"input {spec.name} dim {i} fixed to {d.dim_value}"  # type: ignore[attr-defined]
                    raise err
                if isinstance(want, str) and d.dim_param and d.dim_param != want:
                    rename.setdefault(d.dim_param, want)
        if not rename:
            return
        for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
            if not vi.type.HasField("tensor_type"):
                continue
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in rename:
                    d.dim_param = rename[d.dim_param]


# ---------------------------------------------------------------- helpers

def _program_kwarg_names(program) -> list[str]:
    """The keyword inputs of a torch.export program, in the order of its user inputs."""
    try:
        kwargs_spec = program.call_spec.in_spec.children()[1]
        return [str(k) for k in (kwargs_spec.context or [])]
    except (AttributeError, IndexError, TypeError):
        return []


def _opaque_class():
    torch = _torch()

    class Opaque(torch.nn.Module):
        """Holds a module rebuilt from a program (parameters stay registered, so they
        export as initializers) and makes train()/eval() no-ops: that module refuses them."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def train(self, mode: bool = True):
            return self

        def forward(self, *args):
            return self.inner(*args)

    return Opaque


def _Opaque(inner):
    return _opaque_class()(inner)
