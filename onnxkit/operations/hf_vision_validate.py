"""Validation of an image-classification export: pixel_values made by the folder's own image
processor from images (built-in synthetic ones, or the user's files with --data), logits
compared within tolerance and by top-1 agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxkit.errors import InputError, UsageError
from onnxkit.foundation.compare import Tolerance

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGES = 64
_MAX_PIXELS = 64 * 1024 * 1024  # far above any photo a classifier takes; below a decompression bomb


def builtin_images() -> list[tuple[str, np.ndarray]]:
    """Deterministic RGB images of different sizes and aspect ratios, so resize and crop are
    exercised: a gradient, stripes, a checkerboard, noise, and a small flat-coloured one."""
    h, w = 180, 240
    y, x = np.mgrid[0:h, 0:w]
    gradient = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (w + h - 2)], -1)
    stripes = np.stack([(np.sin(x / 7.0) * 127 + 128), (np.cos(y / 11.0) * 127 + 128), np.full((h, w), 60)], -1)
    yy, xx = np.mgrid[0:256, 0:200]
    checker = (((yy // 25) + (xx // 25)) % 2 * 255)[..., None].repeat(3, -1)
    checker[..., 0] = 255 - checker[..., 0] // 2
    noise = np.random.default_rng(0).integers(0, 256, size=(300, 300, 3))
    flat = np.empty((48, 64, 3))
    flat[...] = (30, 144, 255)
    named = [("gradient", gradient), ("stripes", stripes), ("checkerboard", checker), ("noise", noise), ("flat", flat)]
    return [(n, np.ascontiguousarray(a, dtype=np.uint8)) for n, a in named]


def read_images(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """An image file, or the images of a folder (sorted, at most MAX_IMAGES), as RGB arrays."""
    from onnxkit._lazy import require

    image_mod = require("PIL.Image", "pillow")
    p = Path(path)
    if p.is_dir():
        files = _image_files(p)
        if not files:
            raise InputError(f"--data {p}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        files = files[:MAX_IMAGES]
    elif p.is_file():
        files = [p]
    else:
        raise InputError(f"--data {p}: no such file or folder")
    out = []
    for f in files:
        try:
            with image_mod.open(f) as img:
                if img.width * img.height > _MAX_PIXELS:
                    raise InputError(f"--data {f.name}: {img.width}x{img.height} pixels is too large an image")
                out.append((f.name, np.asarray(img.convert("RGB"), dtype=np.uint8)))
        except InputError:
            raise
        except (OSError, ValueError, image_mod.DecompressionBombError, SyntaxError) as exc:
            raise InputError(f"--data {f.name} is not an image PIL can read: {str(exc).splitlines()[0][:200]}") from None
    return out


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _where(data, images: list) -> str:
    if data is None:
        return f"{len(images)} built-in synthetic images"
    total = len(_image_files(Path(data))) if Path(data).is_dir() else len(images)
    if total > len(images):
        return f"the first {len(images)} of the {total} images in {data} (by name; the others were not read)"
    return f"{len(images)} image(s) from {data}"


def image_batches(model_src, images: list[tuple[str, np.ndarray]]):
    """All images in one batch, then the first one alone (batch 1)."""
    yield f"{len(images)} images", model_src.preprocess([a for _, a in images]), None
    if len(images) > 1:
        yield f"{images[0][0]} alone", model_src.preprocess([images[0][1]]), None


def validate_on_images(model_src, run, specs, data, tolerance: Tolerance | None, *, reference_name: str,
                       candidate_name: str, images: list[tuple[str, np.ndarray]] | None = None):
    """``images`` already read from ``data`` (export reads them before the long export), else
    read here; built-in ones when there is no ``data``."""
    from onnxkit.operations.validate import validate_models

    if images is None:
        images = read_images(data) if data is not None else builtin_images()
    result = validate_models(model_src.predict, run, specs, tolerance=tolerance or Tolerance(),
                             reference_name=reference_name, candidate_name=candidate_name,
                             batches=image_batches(model_src, images))
    result.notes.append(f"pixel_values made by the folder's image processor ({type(model_src.processor).__name__}) "
                        f"from {_where(data, images)}")
    return result


def check_texts_for_images(texts: list[str]) -> None:
    if texts:
        raise UsageError("--text does not apply to an image model; give images with --data (a file or a folder)")
