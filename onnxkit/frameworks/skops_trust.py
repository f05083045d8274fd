"""Which of the types a ``.skops`` file names onnxkit admits without ``--trust``.

skops rebuilds objects itself (no unpickling), but it calls the constructor, ``__new__`` or
``__setstate__`` of every type the file names, and any function the file names may be called
later (a FunctionTransformer's ``func``, a scorer's ``score_func``). ``skops.io.get_untrusted_types``
lists the names it does not vouch for; that list includes scikit-learn's own fitted state
(trees, optimizers, kernels, losses, ``Bunch``), so a plain refusal of it refuses half of
scikit-learn's estimators. The policy here:

- a *class* is admitted when it is scikit-learn's own (defined in ``sklearn``, outside its tests
  and vendored ``externals``, with every base class from scikit-learn, numpy or Python's plain
  data types), or one of numpy's and scipy's data types (dtypes, scalars, arrays, random
  generators, sparse matrices; not ``numpy.memmap``, which opens files);
- a *function* or method is admitted only when it is on an explicit allow-list: scikit-learn's
  univariate score functions and the metric functions behind scikit-learn's named scorers;
- anything else (builtins such as ``eval``, ``os``/``subprocess``, ``functools.partial``, any
  other package) is refused.

Names are resolved by importing modules only inside scikit-learn, numpy and scipy: a file must
not get to choose which other modules onnxkit imports.
"""

from __future__ import annotations

import importlib
import inspect
from functools import lru_cache
from typing import Any

_PACKAGES = ("sklearn", "numpy", "scipy")
# Never imported on a file's say-so: test helpers, vendored code, build tooling.
_DENIED_SEGMENTS = frozenset({"tests", "testing", "_testing", "_testutils", "externals", "f2py", "distutils", "conftest"})
# Base classes a scikit-learn class may have outside scikit-learn itself: Python's plain data
# types and the typing/ABC machinery, none of which run stored code.
_PLAIN_BASE_MODULES = frozenset({"builtins", "abc", "enum", "collections", "numbers", "typing", "dataclasses"})
# Standard-library data containers skops may name.
_STDLIB_TYPES = frozenset({"collections.OrderedDict"})

_SCORE_FUNCTIONS = (
    "f_classif", "f_regression", "r_regression", "chi2", "mutual_info_classif", "mutual_info_regression",
)


def _importable(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in _PACKAGES and not any(p in _DENIED_SEGMENTS for p in parts)


def _resolve(name: str) -> Any | None:
    """The object a dotted name refers to, importing only inside the allowed packages; None
    when the name is outside them or does not resolve."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if not _importable(module):
            return None
        try:
            obj: Any = importlib.import_module(module)
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _module_of(obj: Any) -> str:
    return getattr(obj, "__module__", None) or ""


def _in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _sklearn_class(cls: type) -> bool:
    if not _in_package(_module_of(cls), "sklearn") or not _importable(_module_of(cls)):
        return False
    for base in cls.__mro__[1:]:
        module = _module_of(base)
        if any(_in_package(module, p) for p in _PACKAGES):
            if not _importable(module):
                return False
        elif module not in _PLAIN_BASE_MODULES:
            return False
    return True


@lru_cache(maxsize=1)
def _numpy_scipy_data_types() -> tuple[type, ...]:
    import numpy as np

    types: list[type] = [np.dtype, np.generic, np.random.Generator, np.random.RandomState,
                         np.random.BitGenerator, np.random.SeedSequence]
    try:
        from scipy import sparse

        types.append(sparse.spmatrix)
        types.extend(t for t in (getattr(sparse, "sparray", None),) if isinstance(t, type))
    except ImportError:
        pass
    return tuple(types)


def _numpy_scipy_class(cls: type) -> bool:
    import numpy as np

    if not any(_in_package(_module_of(cls), p) for p in ("numpy", "scipy")):
        return False
    if cls is np.ndarray:  # exactly: subclasses such as memmap open files
        return True
    return issubclass(cls, _numpy_scipy_data_types()) and not issubclass(cls, np.memmap)


@lru_cache(maxsize=1)
def allowed_functions() -> frozenset[int]:
    """ids of the functions a file may name: scikit-learn's univariate score functions and the
    metric function of every scorer scikit-learn registers by name."""
    import sklearn.feature_selection as fs
    from sklearn.metrics import get_scorer, get_scorer_names

    funcs = [getattr(fs, n) for n in _SCORE_FUNCTIONS if hasattr(fs, n)]
    for scorer_name in get_scorer_names():
        score_func = getattr(get_scorer(scorer_name), "_score_func", None)
        if callable(score_func):
            funcs.append(score_func)
    return frozenset(id(f) for f in funcs)


def admitted(name: str) -> bool:
    """Whether a type or function name from ``get_untrusted_types`` may be loaded without --trust."""
    if name in _STDLIB_TYPES:
        return True
    obj = _resolve(name)
    if obj is None:
        return False
    if inspect.isclass(obj):
        return _sklearn_class(obj) or _numpy_scipy_class(obj)
    return id(obj) in allowed_functions()


def refused(untrusted: list[str]) -> list[str]:
    """The names among ``untrusted`` that need --trust, in their order."""
    return [name for name in untrusted if not admitted(name)]
