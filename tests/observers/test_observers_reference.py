"""Reference-based observers: they use the references, and only the references."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from causalvis.observers.observe import decisions_frame, observe
from causalvis.observers.reference import (
    PerceptualEmbedder,
    ReferenceImageObserver,
    ReferencePatchObserver,
    default_layers,
    perceptual_model_for,
)
from causalvis.observers.trials import AssetReader, load_trials
from causalvis.store.layout import StudyPaths

from .conftest import TrialSpec, write_study


@pytest.fixture(scope="module")
def embedder():
    from causalvis.models import load_model

    return PerceptualEmbedder(load_model("lite1"))


def _cat(size: int, box: tuple[int, int, int, int]) -> np.ndarray:
    from skimage import data

    img = Image.fromarray(data.chelsea()).crop(box).resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _smooth(rng: np.random.Generator, size: int) -> np.ndarray:
    """A plain wall: a soft colour gradient."""
    base = rng.integers(90, 170, 3)
    ramp = np.linspace(-25, 25, size)[None, :, None] * rng.choice([-1, 1], 3)
    return np.clip(base + ramp + np.zeros((size, size, 3)), 0, 255).astype(np.uint8)


def _specs():
    rng = np.random.default_rng(3)
    q = _smooth(rng, 224)
    q[:, 112:] = _cat(224, (60, 20, 360, 320))[:, 112:]
    cats = [_cat(160, b) for b in ((80, 40, 300, 260), (120, 10, 380, 270), (40, 60, 260, 280))]
    walls = [_smooth(rng, 160) for _ in range(3)]
    box_wall, box_cat = (10, 60, 100, 150), (124, 40, 214, 130)
    return [
        # references show the cat: occluding the wall keeps more
        TrialSpec(q, box_wall, box_cat, "a", condition="natural", references=cats),
        TrialSpec(q, box_cat, box_wall, "b", condition="natural", references=cats),
        # same query and boxes, references show walls: now the cat patch is "irrelevant"
        TrialSpec(q, box_wall, box_cat, "b", condition="synthetic", references=walls),
        TrialSpec(q, box_wall, box_cat, "a", condition="none"),
    ]


def test_perceptual_model_is_not_the_studied_one():
    assert perceptual_model_for("lite0") == "lite1"
    assert perceptual_model_for("lite1") == "lite0"
    assert perceptual_model_for("timm:resnet50") == "lite0"


def test_default_layers_span_the_depth(embedder):
    layers = default_layers(embedder.model)
    assert len(layers) == 3 and layers == embedder.layers
    emb = embedder.embed([np.zeros((50, 70, 3), np.uint8), np.full((240, 240, 3), 200, np.uint8)])
    assert emb.shape[0] == 2
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("cls", [ReferencePatchObserver, ReferenceImageObserver])
def test_reference_observer_follows_the_references(tmp_path, embedder, cls):
    root = write_study(tmp_path / "s", _specs())
    paths = StudyPaths(root)
    d = decisions_frame(load_trials(paths.trials), AssetReader(paths.bundle), [cls(embedder)])
    # the `none` trial has no references: not applicable, so no decision row
    assert d["trial_id"].tolist() == ["t0000", "t0001", "t0002"]
    assert d["choice"].tolist() == ["a", "b", "b"]
    assert (d["hit"] == 1.0).all()


def test_observe_declares_none_not_applicable(tmp_path, monkeypatch):
    root = write_study(tmp_path / "s", _specs())
    res = observe(root, ["reference_patch", "center"], n_boot=100)
    ref = res.summary["observers"]["reference_patch"]
    assert ref["not_applicable"] == ["none"]
    assert set(ref["conditions"]) == {"natural", "synthetic"}
    assert ref["conditions"]["natural"]["accuracy"] == 1.0
    assert res.summary["perceptual"]["model"] == "lite1"
    assert res.summary["observers"]["center"]["not_applicable"] == []


def test_any_model_can_be_the_perceptual_network(tmp_path):
    root = write_study(tmp_path / "s", _specs())
    res = observe(root, ["reference_image"], perceptual_model="timm:resnet18",
                  perceptual_weights="random", n_boot=50)
    assert res.summary["perceptual"]["model"] == "timm:resnet18"
    assert res.summary["perceptual"]["weights"] == "random"
    assert len(res.summary["perceptual"]["layers"]) >= 2
    assert set(res.summary["observers"]["reference_image"]["conditions"]) == {
        "natural", "synthetic"}
