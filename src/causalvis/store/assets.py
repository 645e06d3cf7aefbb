"""Content-hashed public assets.

Every image a participant may see is written once to ``bundle/assets/<sha256[:20]>.png``
(lossless PNG). The name depends only on the pixel bytes, so nothing in a name or path can
reveal which option is correct, and identical images are stored once. The two options
of a served trial are stored at the same byte length (:func:`equal_length_pair`), so a
file's size says nothing about which option is correct either.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from causalvis.store.layout import StudyPaths, atomic_write


def encode_png(img: Image.Image) -> bytes:
    """Deterministic lossless PNG bytes (no metadata, fixed compression)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def _store_bytes(paths: StudyPaths, data: bytes) -> str:
    """``data`` under its content hash (written once); the path relative to ``bundle/``."""
    name = hashlib.sha256(data).hexdigest()[:20] + ".png"
    target = paths.assets / name
    if not target.exists():
        atomic_write(target, data)
    return f"assets/{name}"


def write_asset(paths: StudyPaths, img: Image.Image | np.ndarray) -> str:
    """Store ``img`` under its content hash; returns the path relative to ``bundle/``."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, dtype=np.uint8), mode="RGB")
    return _store_bytes(paths, encode_png(img))


def asset_path(paths: StudyPaths, rel: str) -> Path:
    """Absolute path of an asset given as ``assets/<name>.png`` (relative to bundle/)."""
    return paths.bundle / rel


def read_asset(paths: StudyPaths, rel: str) -> Image.Image:
    """Decode a stored asset exactly as a browser gets it (RGB, model size)."""
    with Image.open(asset_path(paths, rel)) as img:
        return img.convert("RGB")


def copy_asset(paths: StudyPaths, source: str | Path) -> str:
    """Copy an existing PNG into the bundle under the hash of its bytes (no re-encoding)."""
    return _store_bytes(paths, Path(source).read_bytes())


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# A private, ancillary, safe-to-copy chunk type (PNG spec 5.4: lower-case first letter =
# ancillary, lower-case second = private): decoders skip it, the pixels stay the same.
PAD_CHUNK = b"cvPd"
PAD_OVERHEAD = 12  # length, type and CRC of an empty chunk


def pad_png(data: bytes, length: int) -> bytes:
    """``data`` grown to exactly ``length`` bytes by one padding chunk before ``IEND``
    (pixels unchanged); ``length`` must equal ``len(data)`` or exceed it by at least
    :data:`PAD_OVERHEAD`."""
    extra = length - len(data)
    if extra == 0:
        return data
    if extra < PAD_OVERHEAD:
        raise ValueError(f"cannot pad a PNG by {extra} bytes (a chunk takes {PAD_OVERHEAD})")
    if not (data.startswith(_PNG_SIGNATURE) and data.endswith(_IEND)):
        raise ValueError("not a PNG ending in IEND")
    payload = bytes(extra - PAD_OVERHEAD)
    chunk = (
        struct.pack(">I", len(payload)) + PAD_CHUNK + payload
        + struct.pack(">I", zlib.crc32(PAD_CHUNK + payload))
    )
    return data[: -len(_IEND)] + chunk + _IEND


def is_padded(data: bytes) -> bool:
    """True if the PNG's last chunk before ``IEND`` is a padding chunk."""
    pos, last = len(_PNG_SIGNATURE), b""
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        if ctype == b"IEND":
            return last == PAD_CHUNK
        last, pos = ctype, pos + 12 + length
    return False


def equal_length_pair(paths: StudyPaths, rel_a: str, rel_b: str) -> tuple[str, str]:
    """Padded copies of two option assets with the same byte length (content-hashed, as
    every asset). Both get a padding chunk, so its presence does not mark the shorter;
    a pair padded already is returned as it is (padding twice changes nothing)."""
    data_a, data_b = (asset_path(paths, r).read_bytes() for r in (rel_a, rel_b))
    if len(data_a) == len(data_b) and is_padded(data_a) and is_padded(data_b):
        return rel_a, rel_b
    length = max(len(data_a), len(data_b)) + PAD_OVERHEAD
    return _store_bytes(paths, pad_png(data_a, length)), _store_bytes(paths, pad_png(data_b, length))
