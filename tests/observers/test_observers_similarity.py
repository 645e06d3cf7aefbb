"""The pluggable perceptual similarity (issue 20 item 5): dreamsim and lpips are optional,
imported lazily, never downloaded; the outputs name the similarity used. The packages are
faked here (they are not installed), so these tests are fast and offline."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from causalvis.errors import CausalvisError
from causalvis.observers import similarity
from causalvis.observers.mis import embedder_info, set_similarity
from causalvis.observers.reference import similarity as ref_similarity
from causalvis.observers.registry import make_observers


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name", ["dreamsim", "lpips"])
def test_missing_package_is_one_clear_line(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(CausalvisError) as exc:
        similarity.make_similarity(name)
    text = _one_line(exc)
    assert f"needs the {name} package" in text and "causalvis[perceptual]" in text


class _FakeDreamSimNet:
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1) + 0.1


def _fake_dreamsim(monkeypatch) -> list:
    calls: list = []

    def dreamsim(pretrained=True, device="cpu", cache_dir="./models", dreamsim_type="ensemble",
                 **_):
        calls.append((cache_dir, dreamsim_type))
        return _FakeDreamSimNet(), None

    monkeypatch.setitem(sys.modules, "dreamsim", types.SimpleNamespace(dreamsim=dreamsim))
    return calls


def test_dreamsim_without_cached_weights_is_an_offline_error(monkeypatch, tmp_path):
    calls = _fake_dreamsim(monkeypatch)
    monkeypatch.setenv(similarity.DREAMSIM_CACHE_ENV, str(tmp_path / "empty"))
    with pytest.raises(CausalvisError) as exc:
        similarity.make_similarity("dreamsim")
    text = _one_line(exc)
    assert "no ensemble weights in" in text and "does not download" in text
    assert calls == []  # the package was never asked to fetch anything


def test_dreamsim_from_its_cache_is_named_in_the_observer_output(monkeypatch, tmp_path):
    calls = _fake_dreamsim(monkeypatch)
    cache = tmp_path / "dreamsim"
    (cache / "ensemble_lora").mkdir(parents=True)
    built, info = make_observers(["reference_image"], perceptual_model="dreamsim",
                                 perceptual_weights=str(cache))
    assert calls == [(str(cache), "ensemble")]
    assert info["similarity"] == "dreamsim" and info["model"] == "dreamsim:ensemble"
    assert "DreamSim" in info["features"]
    emb = built[0].embedder.embed([np.full((32, 32, 3), v, np.uint8) for v in (10, 200)])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert embedder_info(built[0].embedder)["similarity"] == "dreamsim"


class _Lin(torch.nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Conv2d(c, 1, 1, bias=False))


class _FakeLPIPS(torch.nn.Module):
    """The parts of lpips.LPIPS the embedder reads: scaling_layer, net.forward, lins."""

    def __init__(self, net="alex", verbose=True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.scaling_layer = torch.nn.Identity()
        self.c1, self.c2 = torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.Conv2d(4, 5, 3, stride=2)
        self.net = types.SimpleNamespace(forward=lambda x: [self.c1(x),
                                                            self.c2(torch.relu(self.c1(x)))])
        self.lins = torch.nn.ModuleList([_Lin(4), _Lin(5)])
        for lin in self.lins:
            torch.nn.init.uniform_(lin.model[-1].weight, 0.1, 1.0)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS as the package computes it (normalise, squared diff, lin, spatial mean)."""
        total = 0.0
        for fa, fb, lin in zip(self.net.forward(a), self.net.forward(b), self.lins, strict=True):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin.model[-1]((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


def test_lpips_embedding_reproduces_the_lpips_distance(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=_FakeLPIPS))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CausalvisError) as exc:
        similarity.make_similarity("lpips")
    assert "not in the torch hub cache" in _one_line(exc)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / similarity.LPIPS_NETS["alex"]).write_bytes(b"x")
    emb = similarity.make_similarity("lpips")
    assert emb.describe()["similarity"] == "lpips" and emb.metric == "neg_sq_euclidean"
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    e = emb.embed(images)
    x = torch.stack([similarity.to_tensor(im, 64) for im in images]) * 2 - 1
    with torch.no_grad():
        want = emb.net.distance(x[[0, 0]], x[[1, 2]]).numpy()
    got = ((e[[0, 0]] - e[[1, 2]]) ** 2).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # both consumers of the metric: -distance, not cosine
    assert ref_similarity(e[0], e[1:], emb.metric) == pytest.approx(-want.mean(), rel=1e-4)
    np.testing.assert_allclose(set_similarity(e[:1], e[1:], emb.metric), [-want.mean()],
                               rtol=1e-4)


def test_the_report_names_the_similarity(tmp_path):
    from causalvis.analysis.load import canonicalize
    from causalvis.analysis.report import AnalysisOptions, analyze_frame, write_report

    df = canonicalize(pd.DataFrame([dict(participant_id=p, condition=c, correct=(i + j) % 2)
                                    for i, (p, c) in enumerate([("a", "none"), ("b", "natural")])
                                    for j in range(4)]), {})
    observers = {"perceptual": {"similarity": "dreamsim", "model": "dreamsim:ensemble",
                                "features": "DreamSim embedding (224 px), cosine"},
                 "observers": {"reference_image": {"conditions": {
                     "natural": {"accuracy": 0.7, "ci_low": 0.6, "ci_high": 0.8,
                                 "n_trials": 10}}}}}
    s = analyze_frame(df, observers=observers,
                      options=AnalysisOptions(n_boot=50, n_perm=50, mixed_model=False))
    assert s["observers_perceptual"]["similarity"] == "dreamsim"
    page = write_report(s, tmp_path / "r").read_text()
    assert "Perceptual similarity of the reference observers and MIS: <b>dreamsim</b>" in page
