"""Content-hashed public assets.

Every image a participant may see is written once to ``bundle/assets/<sha256[:20]>.png``
(lossless PNG). The name depends only on the pixel bytes, so nothing in a name or path can
reveal which option is correct, and identical images are stored once.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from causalvis.store.layout import StudyPaths, atomic_write


def encode_png(img: Image.Image) -> bytes:
    """Deterministic lossless PNG bytes (no metadata, fixed compression)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def write_asset(paths: StudyPaths, img: Image.Image | np.ndarray) -> str:
    """Store ``img`` under its content hash; returns the path relative to ``bundle/``."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8), mode="RGB")
    data = encode_png(img)
    name = hashlib.sha256(data).hexdigest()[:20] + ".png"
    target = paths.assets / name
    if not target.exists():
        atomic_write(target, data)
    return f"assets/{name}"


def asset_path(paths: StudyPaths, rel: str) -> Path:
    """Absolute path of an asset given as ``assets/<name>.png`` (relative to bundle/)."""
    return paths.bundle / rel


def read_asset(paths: StudyPaths, rel: str) -> Image.Image:
    """Decode a stored asset exactly as a browser gets it (RGB, model size)."""
    with Image.open(asset_path(paths, rel)) as img:
        return img.convert("RGB")


def copy_asset(paths: StudyPaths, source: str | Path) -> str:
    """Copy an existing PNG into the bundle under the hash of its bytes (no re-encoding)."""
    data = Path(source).read_bytes()
    name = hashlib.sha256(data).hexdigest()[:20] + ".png"
    target = paths.assets / name
    if not target.exists():
        atomic_write(target, data)
    return f"assets/{name}"
