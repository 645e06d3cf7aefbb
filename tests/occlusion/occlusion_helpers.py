"""Hand-made study folders for the occlusion / trials tests (no scan needed)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from causalvis.config import preset
from causalvis.store.layout import StudyPaths, write_json
from causalvis.store.units import unit_key

# Sample ids of the embedded image set (see causalvis.images.SampleSource).
IMAGES = [
    "chelsea/s0.60/r1c1", "coffee/s0.80/r0c1", "astronaut/s0.45/r1c2", "rocket/s0.60/r2c1",
    "chelsea/s0.45/r0c0", "coffee/s0.60/r2c2", "astronaut/s0.80/r1c0", "china/s0.60/r1c1",
]


def make_study(root: Path, units: list[tuple[str, int, str]], *, sets: int = 2,
               stride: int = 32, **overrides) -> StudyPaths:
    """A quick-preset study with units.json and exemplars/<unit>.json written by hand.

    Every unit's image set b uses IMAGES[b] as query (so units of one layer share query
    images) and a top list of ranks 1..bin_size drawn from IMAGES.
    """
    cfg = preset("quick")
    cfg.occlusion.stride = stride
    cfg.exemplars = {"n_top": 40, "n_bins": 4, "n_references": 3, "n_image_sets": sets}
    for section, values in overrides.items():
        for name, value in values.items():
            setattr(getattr(cfg, section), name, value)
    paths = StudyPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg.save(paths.config)
    bin_size = 10
    records = []
    for i, (layer, channel, role) in enumerate(units):
        key = unit_key(layer, channel)
        records.append({"layer": layer, "channel": channel, "key": key, "role": role,
                        "seed": i})
        top = [{"rank": r, "image_id": IMAGES[(bin_size - r) % len(IMAGES)],
                "activation": float(20 - r)} for r in range(1, bin_size + 1)]
        image_sets = [{"image_set": b, "query": top[bin_size - b - 1], "references": []}
                      for b in range(sets)]
        write_json(paths.exemplars / f"{key}.json",
                   {"layer": layer, "channel": channel, "key": key, "scheme": "rank_bins",
                    "top": top, "bottom": [], "image_sets": image_sets})
    write_json(paths.units, {"units": records, "skipped_dead": []})
    return paths


@contextmanager
def shared_model(model):
    """Let ``build`` reuse the session's lite0 instead of loading it again per stage run."""
    import causalvis.models

    real = causalvis.models.load_model

    def load(name, *, weights=None, device="cpu", **kwargs):
        if name == "lite0" and weights is None and str(device) == "cpu":
            return model
        return real(name, weights=weights, device=device, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(causalvis.models, "load_model", load)
        yield
