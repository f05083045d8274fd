"""Pairing a source's inputs and outputs with an ONNX model's, when names differ.

Exporters name things their own way (``torch.onnx.export`` says ``x`` or ``input.1``,
skl2onnx ``X``, tf2onnx ``pixels``), so a model exported by hand rarely uses onnxkit's
names. Pairs are made by explicit map first, then by name, then by position or by
rank/dtype where that leaves no doubt; every pair not made by name is reported in a note.
When no safe pairing exists the error names both sides and the flag that settles it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from onnxkit.errors import InputError, UsageError

_KIND_GROUP = {"f": "float", "c": "float", "i": "integer", "u": "integer", "b": "bool", "U": "text", "S": "text", "O": "text"}


@dataclass(frozen=True)
class Port:
    """One input or output as far as pairing cares: its name, rank and dtype family."""

    name: str
    rank: int | None = None
    kind: str | None = None  # float, integer, bool, text

    def describe(self) -> str:
        parts = [f"rank {self.rank}" if self.rank is not None else "", self.kind or ""]
        extra = ", ".join(p for p in parts if p)
        return f"{self.name} ({extra})" if extra else self.name

    def fits(self, other: Port) -> bool:
        rank_ok = self.rank is None or other.rank is None or self.rank == other.rank
        kind_ok = self.kind is None or other.kind is None or self.kind == other.kind
        return rank_ok and kind_ok


def kind_of(dtype) -> str | None:
    try:
        return _KIND_GROUP.get(np.dtype(dtype).kind)
    except TypeError:
        return None


def port_of_spec(spec) -> Port:
    """A Port from an InputSpec (shape may be empty when unknown)."""
    return Port(spec.name, len(spec.shape) if spec.shape else None, kind_of(spec.dtype))


def port_of_array(name: str, value) -> Port:
    arr = np.asarray(value)
    return Port(name, arr.ndim, kind_of(arr.dtype))


@dataclass
class Pairing:
    """(source name, ONNX name) pairs, in the ONNX model's order, and how each was made."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)  # ONNX name -> "name" | "map" | "position" | "rank/dtype"

    @property
    def renamed(self) -> bool:
        return any(h != "name" for h in self.how.values())

    def note(self, what: str) -> str | None:
        """One line naming every pair not made by name, or None when names matched."""
        if not self.renamed:
            return None
        listed = "; ".join(f"{s} -> {o} ({self.how[o]})" for s, o in self.pairs if self.how[o] != "name")
        return f"{what}s paired source -> model: {listed}"

    def source_to_onnx(self) -> dict[str, str]:
        return dict(self.pairs)

    def onnx_to_source(self) -> dict[str, str]:
        return {o: s for s, o in self.pairs}


def parse_map(items: Iterable[str] | None, flag: str) -> dict[str, str]:
    """``--input-map src=onnx`` values (repeatable, or comma-separated) as a dict."""
    out: dict[str, str] = {}
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            src, sep, dst = part.partition("=")
            src, dst = src.strip(), dst.strip()
            if not sep or not src or not dst:
                raise UsageError(f"malformed {flag} {part!r}; expected SOURCE_NAME=MODEL_NAME")
            if src in out and out[src] != dst:
                raise UsageError(f"{flag} maps {src!r} twice ({out[src]!r} and {dst!r})")
            out[src] = dst
    targets = list(out.values())
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise UsageError(f"{flag} maps several source names onto {', '.join(dup)}")
    return out


def _sides(src: list[Port], onnx: list[Port]) -> str:
    return (f"source {', '.join(p.describe() for p in src) or 'none'}; "
            f"model {', '.join(p.describe() for p in onnx) or 'none'}")


def pair_ports(
    src: list[Port],
    onnx: list[Port],
    *,
    what: str = "input",
    explicit: Mapping[str, str] | None = None,
    ordered: bool = False,
    flag: str | None = None,
) -> Pairing:
    """Pair source ports with ONNX ports.

    ``ordered`` says the source's order is meaningful (a PyTorch module's positional
    arguments and returned tuple): the ports left after naming are then paired by position
    whatever their types, so a wrong rank or dtype shows up in the comparison as a failure.
    Otherwise leftovers are paired only where rank and dtype single out one partner.
    """
    flag = flag or f"--{what}-map"
    explicit = dict(explicit or {})
    src_names = [p.name for p in src]
    onnx_names = [p.name for p in onnx]
    for s, o in explicit.items():
        if s not in src_names or o not in onnx_names:
            bad = f"{s!r} is not a source {what}" if s not in src_names else f"{o!r} is not a model {what}"
            raise UsageError(f"{flag} {s}={o}: {bad} ({_sides(src, onnx)})")
    how: dict[str, str] = {o: "map" for o in explicit.values()}
    by_onnx: dict[str, str] = {o: s for s, o in explicit.items()}
    for name in onnx_names:
        if name not in by_onnx and name in src_names and name not in explicit:
            by_onnx[name] = name
            how[name] = "name"
    left_src = [p for p in src if p.name not in by_onnx.values()]
    left_onnx = [p for p in onnx if p.name not in by_onnx]
    if len(left_src) != len(left_onnx):
        count = f"{what} count differs" if len(src) != len(onnx) else f"{what} names differ"
        raise UsageError(
            f"{count}: cannot pair {', '.join(p.name for p in left_src) or 'nothing'} (source) with "
            f"{', '.join(p.name for p in left_onnx) or 'nothing'} (model); {_sides(src, onnx)}",
            hint=f"pass {flag} SOURCE_NAME=MODEL_NAME for each {what} to pair",
        )
    if left_src:
        if ordered:
            for s, o in zip(left_src, left_onnx):
                by_onnx[o.name] = s.name
                how[o.name] = "position"
        else:
            _pair_by_type(left_src, left_onnx, by_onnx, how, what, flag, src, onnx)
    pairs = [(by_onnx[o], o) for o in onnx_names]
    return Pairing(pairs=pairs, how=how)


def _pair_by_type(left_src, left_onnx, by_onnx, how, what, flag, src, onnx) -> None:
    """Pair leftovers where rank and dtype leave exactly one candidate on each side."""
    fits = {s.name: [o for o in left_onnx if s.fits(o)] for s in left_src}
    fitted_by = {o.name: [s for s in left_src if s.fits(o)] for o in left_onnx}
    unique = all(len(v) == 1 for v in fits.values()) and all(len(v) == 1 for v in fitted_by.values())
    if not unique:
        doubt = [s.name for s in left_src if len(fits[s.name]) != 1]
        why = ("several have the same rank and dtype" if any(len(fits[n]) > 1 for n in doubt)
               else "rank or dtype differ")
        raise UsageError(
            f"cannot pair {what}s safely by name or type ({why}): {_sides(src, onnx)}",
            hint=f"pass {flag} SOURCE_NAME=MODEL_NAME, e.g. {flag} {left_src[0].name}={left_onnx[0].name}",
        )
    position_order = all(fits[s.name][0].name == o.name for s, o in zip(left_src, left_onnx))
    for s in left_src:
        o = fits[s.name][0]
        by_onnx[o.name] = s.name
        how[o.name] = "position" if position_order else "rank/dtype"


def rename(feeds: Mapping[str, np.ndarray], names: Mapping[str, str]) -> dict[str, np.ndarray]:
    """``feeds`` with keys renamed by ``names`` (keys not in it are kept)."""
    return {names.get(k, k): v for k, v in feeds.items()}


# numpy's names for arrays saved without a keyword (np.savez(f, x)): not a claim about any input
_UNNAMED_KEY = "arr_0"


def check_data_keys(keys: list[str], specs: list, where: str) -> dict[str, str]:
    """How a data file's keys feed the model's inputs: {key: input name}.

    A key that names no input is an error naming it and the inputs: feeding it to the only
    input silently would validate on data meant for something else. The one exception is an
    unnamed array (``arr_0``) in a file holding nothing else, for a model with one input."""
    names = [s.name for s in specs]
    if not names:
        return {k: k for k in keys}
    if len(keys) == 1 and len(names) == 1 and keys[0] == _UNNAMED_KEY and _UNNAMED_KEY not in names:
        return {keys[0]: names[0]}
    unknown = [k for k in keys if k not in names]
    if unknown:
        raise InputError(
            f"{where}: key(s) {', '.join(repr(k) for k in unknown)} name no input of the model; "
            f"its inputs are {', '.join(names)}",
            hint="save the arrays under the model's input names (np.savez(f, NAME=array))",
        )
    return {k: k for k in keys}


def user_specs_for_model(user_specs: list, model_specs: list, input_map: Mapping[str, str] | None) -> list:
    """The user's ``--input`` specs as they apply to the ONNX model being checked.

    ``--input`` names the source's inputs (a PyTorch factory needs them); where those names
    are not the model's, a spec follows ``--input-map``, or the model's only input when both
    sides have one. Specs that reach no model input are left to the source alone (whether
    they name anything at all is checked once the source is loaded)."""
    import dataclasses

    names = {s.name for s in model_specs}
    out = []
    for spec in user_specs:
        if spec.name in names:
            out.append(spec)
        elif input_map and input_map.get(spec.name) in names:
            out.append(dataclasses.replace(spec, name=input_map[spec.name]))
        elif len(user_specs) == 1 and len(model_specs) == 1:
            out.append(dataclasses.replace(spec, name=model_specs[0].name))
    return out


def check_user_spec_names(user_specs: list, src_specs: list, model_specs: list) -> None:
    known = {s.name for s in src_specs} | {s.name for s in model_specs}
    unknown = [s.name for s in user_specs if s.name not in known]
    if unknown:
        raise UsageError(
            f"--input names {', '.join(unknown)}: neither a source input ({', '.join(s.name for s in src_specs) or 'none'}) "
            f"nor a model input ({', '.join(s.name for s in model_specs) or 'none'})",
        )


def reference_on_model_inputs(predict, pairing: Pairing, src_specs: list):
    """Wrap a source's ``predict`` so it takes feeds keyed by the ONNX model's input names.

    A float input whose width differs (skl2onnx ``DoubleTensorType`` against a float32
    source) is handed to the source in the source's own dtype."""
    to_src = pairing.onnx_to_source()
    dtypes = {s.name: np.dtype(s.dtype) for s in src_specs}

    def run(feeds):
        out = {}
        for k, v in feeds.items():
            name = to_src.get(k, k)
            want = dtypes.get(name)
            arr = np.asarray(v)
            if want is not None and arr.dtype != want and arr.dtype.kind == want.kind == "f":
                arr = arr.astype(want)
            out[name] = arr
        return predict(out)

    return run
