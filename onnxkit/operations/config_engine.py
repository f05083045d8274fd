"""The ``[validate]`` keys that choose where the pipeline's validation stages run:
``engine = "ray"`` spreads them over Ray actors (``onnxkit.operations.validate_ray``) on the
shards of ``data``, with ``address``, ``workers`` and ``batch_size`` as ``validate --engine ray``
takes them.

Kept apart from :mod:`onnxkit.operations.config`, which adds these keys to its schema and
calls :func:`check_engine` with the other cross-key checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxkit.errors import UsageError

ENGINES = ("local", "ray")


def engine_keys(key_cls: type) -> list:
    """The keys, built with config's ``Key`` (passed in: config imports this module)."""
    return [
        key_cls("engine", "str", "local", "Where validation runs: local (this process) or ray (the data's shards over "
                "Ray actors; needs data).", choices=ENGINES),
        key_cls("address", "str", None, "engine = \"ray\": auto or ray://host:port joins a cluster; unset = start a "
                "local Ray.", optional=True),
        key_cls("workers", "int", None, "engine = \"ray\": source + ONNX actor pairs; unset = one per CPU.",
                minimum=1, optional=True),
        key_cls("batch_size", "int", None, "engine = \"ray\": rows per task; unset = 4096.", minimum=1, optional=True),
    ]


def check_engine(cfg_name: str, sections: dict[str, dict[str, Any]]) -> None:
    """Refuse what cannot be meant: Ray options without the Ray engine, Ray without data, a
    folder of shards where another stage reads ``validate.data`` as one file."""
    validate = sections["validate"]
    if validate.get("engine", "local") != "ray":
        given = [k for k in ("address", "workers", "batch_size") if validate.get(k) is not None]
        if given:
            raise UsageError(f"{cfg_name}: validate.{given[0]} only applies with validate.engine = \"ray\"")
        return
    if not validate.get("enabled", True):
        return
    if validate.get("data") is None:
        raise UsageError(f"{cfg_name}: validate.engine = \"ray\" needs validate.data (a file or folder of shards)")
    if validate.get("samples") is not None:
        raise UsageError(f"{cfg_name}: validate.samples cannot be combined with validate.engine = \"ray\" "
                         "(it validates every row of the shards)")
    folder = Path(validate["data"]).is_dir()
    readers = [name for name, on in (
        ("optimize (mode auto)", sections["optimize"]["enabled"] and sections["optimize"]["mode"] == "auto"),
        ("quantize", sections["quantize"]["enabled"])) if on]
    if folder and readers:
        raise UsageError(f"{cfg_name}: validate.data is a folder of shards, but {' and '.join(readers)} read(s) it as one "
                         "data file", hint="give one parquet file (Ray cuts it into row ranges), or disable those stages")
