"""Pre-flight checks on input paths and atomic writes of outputs.

Every file a user hands to onnxkit goes through :func:`preflight` before any library sees
it, and every file onnxkit writes goes through :func:`atomic_output`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onnxkit.errors import EnvironmentProblem, InputError, Interrupted, UsageError

# Magic bytes -> what a user would call the file. Used only to explain a refusal.
_MAGIC: list[tuple[bytes, str]] = [
    (b"PK\x03\x04", "a ZIP archive (a PyTorch .pt/.pt2, Keras .keras or skops file?)"),
    (b"\x80\x02", "a Python pickle"),
    (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (a legacy Keras .h5?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "a gzip file"),
    (b"{", "a JSON document"),
    (b"tree\n", "a LightGBM text model"),
    (b"version=", "a LightGBM text model"),
    (b"<", "an HTML or XML document (a download that failed?)"),
]


def describe_magic(head: bytes) -> str | None:
    """What the first bytes of a file look like, in words, or None if unknown."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return None


def read_head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def preflight(path: str | os.PathLike[str], *, what: str = "file", allow_dir: bool = False) -> Path:
    """Check that ``path`` exists and is a readable regular file (or directory when allowed).

    FIFOs, sockets and devices are refused from ``stat`` alone, so nothing blocks on them.
    Returns the path as given (not resolved: symlink rules are the caller's business).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {p}") from None
    except PermissionError:
        raise InputError(f"{what} not readable (permission denied): {p}") from None
    except OSError as exc:
        raise InputError(f"{what} cannot be opened: {p} ({exc.strerror})") from None
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        if allow_dir:
            if not os.access(p, os.R_OK | os.X_OK):
                raise InputError(f"{what} not readable (permission denied): {p}")
            return p
        raise InputError(f"{what} is a directory, expected a file: {p}")
    if not stat.S_ISREG(mode):
        raise InputError(f"{what} is {special_kind(mode)}, not a regular file: {p}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} not readable (permission denied): {p}")
    if st.st_size == 0:
        raise InputError(f"{what} is empty (0 bytes): {p}")
    return p


def special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def refuse_special_output(out: str | os.PathLike[str]) -> None:
    """Refuse an existing output that is a device, FIFO or socket.

    The atomic rename would replace the node itself: as root, ``-o /dev/null`` would leave
    a model file where every program expects the null device. Nothing is opened, so a FIFO
    without a reader cannot block us either."""
    try:
        mode = os.lstat(out).st_mode
    except OSError:
        return  # absent (the normal case) or unreachable: the write itself will say
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
        return  # directories and symlinks have their own messages
    raise UsageError(f"output {out} is {special_kind(mode)}, not a regular file; refusing to replace it")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


ONNX_SUFFIXES = (".onnx",)


def onnx_sidecar(out: str | os.PathLike[str]) -> Path:
    """Where :func:`onnx_io.save_onnx` puts the weights of a model too large for one protobuf."""
    o = Path(out)
    return o.parent / (o.name + ".data")


def check_onnx_suffix(out: str | os.PathLike[str], suffixes: tuple[str, ...] = ONNX_SUFFIXES) -> None:
    # "-o x.npy" is almost always a slip of the argument order, and the file it replaces is
    # usually one the user meant to read.
    if not str(out).lower().endswith(suffixes):
        raise UsageError(f"output {out} is an ONNX model; give a file name ending in {' or '.join(suffixes)}")


# Past this size the graph is not parsed only to list its external data (that would hold a
# second copy of embedded weights in memory); the file is scanned for the names instead.
PARSE_FOR_LOCATIONS_MAX = 256 << 20


def _mentions(model: Path, names: list[bytes]) -> bool:
    """Whether any of ``names`` occurs in the file, read in blocks with some overlap."""
    keep = max(len(n) for n in names) - 1
    tail = b""
    with open(model, "rb") as fh:
        while block := fh.read(8 << 20):
            window = tail + block
            if any(n in window for n in names):
                return True
            tail = window[-keep:] if keep else b""
    return False


def _external_data_files(model: Path, candidates: list[Path] = ()) -> list[Path]:  # type: ignore[assignment]
    """The files an ONNX model's tensors point to (graph read only, weights not loaded).

    A file that does not parse contributes nothing here: loading it later says what is wrong.
    A model too large to parse twice is scanned for the names of ``candidates`` (the files
    about to be written): one it names counts as its external data."""
    try:
        if model.stat().st_size > PARSE_FOR_LOCATIONS_MAX:
            found = []
            for c in candidates:
                if _exists(c):
                    with contextlib.suppress(ValueError):
                        rel = os.path.relpath(c, model.parent)
                        if _mentions(model, [rel.encode(), c.name.encode()]):
                            found.append(c)
            return found
        import onnx

        proto = onnx.load_model(str(model), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure is reported by the real load
        return []
    from onnxkit.foundation.onnx_walk import iter_tensors

    locations: dict[str, Path] = {}
    for _, tensor in iter_tensors(proto):
        for entry in tensor.external_data:
            # Not valid UTF-8 (protobuf hands over bytes) or with a NUL: no file can have that
            # name; the real load refuses the model with its own message.
            if entry.key == "location" and isinstance(entry.value, str) and entry.value and "\0" not in entry.value:
                locations.setdefault(entry.value, model.parent / entry.value)
    return [p for p in locations.values() if _exists(p)]


def _exists(p: Path) -> bool:
    # A hostile location (thousands of characters, a loop of symlinks) must not raise here.
    try:
        return p.exists()
    except OSError:
        return False


def expand_reads(*paths: str | os.PathLike[str] | None, writes: list[Path] = ()) -> list[Path]:  # type: ignore[assignment]
    """Every file behind the paths a command reads: an ONNX model brings the external-data files
    it names, a factory reference ``file.py:function`` its ``file.py``. ``writes``: the files
    about to be written, looked for by name in a model too large to parse."""
    out: list[Path] = []
    for raw in paths:
        if raw is None:
            continue
        p = Path(raw)
        if not p.exists() and ":" in str(raw):
            p = Path(str(raw).rsplit(":", 1)[0])
        if not p.exists():
            continue
        out.append(p)
        if p.is_file() and p.suffix.lower() == ".onnx":
            out.extend(_external_data_files(p, list(writes)))
    return out


def same_file(a: Path, b: Path) -> bool:
    """One file under two names: the same resolved path, or the same inode (hard links)."""
    with contextlib.suppress(OSError):
        if a.resolve() == b.resolve():
            return True
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def _check_one_output(o: Path) -> None:
    if str(o).endswith(os.sep) or o.is_dir():
        raise UsageError(f"output is a directory, expected a file path: {o}")
    if o.is_symlink():
        raise UsageError(f"output is a symbolic link; refusing to write through it: {o}")
    refuse_special_output(o)


def check_io(
    writes: list[str | os.PathLike[str] | None],
    reads: list[str | os.PathLike[str] | None],
    *,
    onnx_outputs: list[str | os.PathLike[str] | None] = (),  # type: ignore[assignment]
) -> None:
    """The one rule for what a command writes: no write is the same file as anything it reads
    (a model's external data, data files, factory sources and weights included) or as another
    write, and none lies inside an input folder. ``onnx_outputs`` are ONNX models: they must end
    in ``.onnx`` and their ``.data`` sidecar counts as a write. Checked before any work."""
    models = [Path(m) for m in onnx_outputs if m is not None]
    outs = [Path(w) for w in writes if w is not None]
    for o in outs + models:
        _check_one_output(o)
    all_writes = outs + [x for m in models for x in (m, onnx_sidecar(m))]
    sources = expand_reads(*reads, writes=all_writes)
    for w in all_writes:
        for s in sources:
            if same_file(w, s):
                raise UsageError(f"output {w} would overwrite the input {s}", hint="write the output elsewhere")
            # An output inside a SavedModel directory given as input would modify the source.
            with contextlib.suppress(OSError):
                if s.is_dir() and w.resolve().is_relative_to(s.resolve()):
                    raise UsageError(f"output lies inside the input directory {s}: {w}")
    for i, a in enumerate(all_writes):
        for b in all_writes[i + 1:]:
            if same_file(a, b):
                raise UsageError(f"two outputs on one path: {a} and {b}; one would overwrite the other")
    for m in models:  # after the clashes: "would overwrite the input" says more than a wrong suffix
        check_onnx_suffix(m)
    for o in outs + models:
        parent = o.parent if str(o.parent) else Path(".")
        if not parent.exists():
            raise EnvironmentProblem(f"output folder does not exist: {parent}")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise EnvironmentProblem(f"output folder is not writable: {parent}")


def check_output_path(out: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None, onnx: bool = False) -> Path:
    """Refuse an output that is a directory, a symlink, or the same file as an input (or any
    file behind one, see :func:`expand_reads`); check that its folder exists and is writable,
    before any expensive work. ``onnx``: the output is an ONNX model (see :func:`check_io`)."""
    if onnx:
        check_io([], list(inputs), onnx_outputs=[out])
    else:
        check_io([out], list(inputs))
    return Path(out)


def _raise_os_error(exc: OSError, dest: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise EnvironmentProblem(f"disk full while writing {dest}; the previous file (if any) is untouched") from None
    if exc.errno == errno.EFBIG:
        raise EnvironmentProblem(f"file size limit reached while writing {dest}") from None
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise EnvironmentProblem(f"cannot write {dest}: {exc.strerror}") from None
    raise EnvironmentProblem(f"cannot write {dest}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; on success fsync and rename it onto
    ``dest``. On any failure (disk full, Ctrl-C, exception) the temporary file is removed and
    the previous ``dest`` is left as it was."""
    dest = Path(dest)
    if dest.is_symlink():
        raise UsageError(f"output is a symbolic link; refusing to write through it: {dest}")
    refuse_special_output(dest)
    folder = dest.parent if str(dest.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".tmp", dir=folder)
    except OSError as exc:
        _raise_os_error(exc, dest)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; give the file the permissions a normal write would: those of
        # the file it replaces, else 0666 minus the umask.
        try:
            mode = stat.S_IMODE(os.stat(dest).st_mode)
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        if dest.is_symlink():  # appeared while we were writing: still never write through it
            raise UsageError(f"output is a symbolic link; refusing to write through it: {dest}")
        refuse_special_output(dest)  # created while we were writing
        os.replace(tmp, dest)
        with contextlib.suppress(OSError):
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except KeyboardInterrupt:
        tmp.unlink(missing_ok=True)
        raise Interrupted() from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _raise_os_error(exc, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(dest: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_output(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(dest, text.encode("utf-8"))
