"""What both tasks' ``trials`` stages share: the served bytes and the base trial table.

Every image a participant sees is encoded as lossless PNG, decoded again and re-run
through the model (:func:`decode_png`, :func:`measure`), so the stored activations are
those of the served bytes; the two options are labelled ``a``/``b`` in a seeded order
(:func:`order_flip`); the kept trials go to ``stimuli/trials_base.csv`` and, until stage
``sessions`` expands it, to ``trials.csv`` (:func:`write_base_trials`).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.store.layout import (
    StudyPaths,
    atomic_write,
    read_json,
    stamp_matches,
    write_json,
    write_stamp,
)
from causalvis.store.trials import write_trials


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def measure(model, layer: str, channel: int, images: list[np.ndarray]) -> list[float]:
    """The unit's activation on uint8 images, exactly as ``causalvis probe`` computes it."""
    acts = probe_tensor(model, uint8_to_tensor(np.stack(images)), [layer])[layer]
    return [float(v) for v in acts[:, channel]]


def order_flip(seed: int, key: str, image_set: int) -> bool:
    """Seeded coin: True = the argmax (maximal) option is labelled ``b``."""
    digest = hashlib.sha256(f"{seed}|option-order|{key}|{image_set}".encode()).digest()
    return bool(digest[0] & 1)


def write_base_trials(
    paths: StudyPaths, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """``stimuli/trials_base.csv``, and a copy as ``trials.csv`` when it changed (or is
    missing): the condition-free table the sessions stage later expands."""
    if write_trials(paths.base_trials, rows, columns) or not paths.trials.is_file():
        atomic_write(paths.trials, paths.base_trials.read_bytes())


ASSET_COLUMNS = ("query_asset", "option_a_asset", "option_b_asset")


def cached_trial(
    paths: StudyPaths, key: str, image_set: int, digest: str,
    build: Callable[[Counter], dict],
) -> tuple[dict, Counter]:
    """One (unit, image set) trial row and its drop counts: reused when its stamp matches
    and every asset it names still exists, otherwise built by ``build(counts)`` and cached."""
    cache, stamp = paths.trial_cache(key, image_set), f"trials/{key}/set{image_set}"
    if cache.is_file() and stamp_matches(paths, stamp, digest):
        cached = read_json(cache)
        row = cached["row"]
        served = [row[c] for c in ASSET_COLUMNS if row and row.get(c)]
        if all((paths.bundle / rel).is_file() for rel in served):
            return row, Counter(cached["drops"])
    counts: Counter = Counter()
    row = build(counts)
    write_json(cache, {"row": row, "drops": dict(counts)})
    write_stamp(paths, stamp, digest)
    return row, counts
