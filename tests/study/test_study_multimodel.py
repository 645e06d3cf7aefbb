"""A multi-model study: sub-studies per model, merged into one bundle whose sessions each
show one model, and whose trial table says which model every trial belongs to."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from causalvis.config import StudyConfig
from causalvis.errors import ConfigError
from causalvis.pipeline.build import build, init_study
from causalvis.pipeline.multimodel import substudy_paths
from causalvis.server.bundle import load_bundle
from causalvis.store.layout import StudyPaths

MODELS = ["lite0", "lite1"]


def tiny_multimodel(root: Path) -> StudyConfig:
    cfg = init_study(root, "quick", models=MODELS)
    cfg.images.max_images = 120
    cfg.units.layers = ["blocks.3.2"]
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_top = 30
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 3
    cfg.exemplars.n_image_sets = 2
    cfg.conditions.names = ["none", "natural"]
    cfg.conditions.n_references = 3
    cfg.occlusion.stride = 32
    cfg.featurevis.also_render = []
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
    cfg.save(StudyPaths(root).config)
    return cfg


@pytest.fixture(scope="module")
def multi_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi") / "study"
    cfg = tiny_multimodel(root)
    timings = build(root, progress=False)
    return root, cfg, timings


def test_each_model_is_built_in_its_own_substudy(multi_study):
    root, cfg, timings = multi_study
    paths = StudyPaths(root)
    for model in MODELS:
        sub = substudy_paths(paths, model)
        sub_cfg = StudyConfig.load(sub.config)
        assert sub_cfg.model.name == model and sub_cfg.models == []
        assert sub_cfg.digest("units", "exemplars", "occlusion") == cfg.digest(
            "units", "exemplars", "occlusion"
        )
        assert (sub.stimuli / "trials_base.csv").is_file()
        assert f"{model}:scan" in timings
    assert "sessions" in timings and not (paths.activations).exists()


def test_merged_bundle_tags_every_trial_and_session_with_its_model(multi_study):
    root, _, _ = multi_study
    paths = StudyPaths(root)
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    assert set(trials["model"]) == set(MODELS)
    plan = json.loads(paths.sessions.read_text())
    assert plan["models"] == MODELS
    by_id = trials.set_index("trial_id")
    assert not by_id.index.duplicated().any()
    for session in plan["sessions"]:
        models = {by_id.loc[t, "model"] for t in [*session["trials"], *session["practice"]]}
        assert models == {session["model"]}
    # every model gets the same grid: conditions x image sets x unit groups
    per_model = pd.Series([s["model"] for s in plan["sessions"]]).value_counts()
    assert per_model.nunique() == 1 and set(per_model.index) == set(MODELS)
    # the channels differ between models but the same layer name exists in both
    for model in MODELS:
        assert (trials[trials["model"] == model]["kind"] == "main").any()
    # the parent's bundle is complete and servable on its own
    bundle = load_bundle(root)
    assert len(bundle.trials) == len(trials)
    for rel in trials["option_a_asset"].tolist() + trials["option_b_asset"].tolist():
        assert (paths.bundle / rel).is_file()


def test_rerun_rewrites_nothing(multi_study):
    root, _, _ = multi_study
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    build(root, progress=False)
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert [str(p.relative_to(root)) for p in before if after.get(p) != before[p]] == []


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="models"):
        StudyConfig.from_dict({"models": ["lite0", "lite0"]})
    with pytest.raises(ConfigError, match="conditions.names|none"):
        StudyConfig.from_dict({"task": "two_afc", "exemplars": {"scheme": "imi"}})
    with pytest.raises(ConfigError, match="scheme"):
        StudyConfig.from_dict({"task": "two_afc", "conditions": {"names": ["natural"]}})


def test_model_layers_give_each_model_its_own_layers(tmp_path):
    """units.model_layers: a sub-study gets its entry's layers (scan.layers too when set);
    an entry not listed keeps units.layers; a key that is no model is one error."""
    from causalvis.pipeline.multimodel import substudy_config

    cfg = StudyConfig.from_dict({"models": ["lite0", "timm:vit_tiny_patch16_224"],
                                 "units": {"layers": ["blocks.3.2"], "model_layers": {
                                     "timm:vit_tiny_patch16_224": ["blocks.1.mlp.fc1"]}}})
    vit = substudy_config(cfg, "timm:vit_tiny_patch16_224", tmp_path)
    assert vit.units.layers == ["blocks.1.mlp.fc1"] and vit.units.model_layers == {}
    assert substudy_config(cfg, "lite0", tmp_path).units.layers == ["blocks.3.2"]
    plain = StudyConfig()  # an empty model_layers leaves older studies' digests as they were
    units = plain.model_dump(mode="json")["units"]
    del units["model_layers"]
    assert plain.digest("units") == hashlib.sha256(json.dumps(
        {"units": units}, sort_keys=True).encode()).hexdigest()[:16]
    assert cfg.digest("units") != StudyConfig.from_dict({"models": cfg.models, "units": {
        "layers": ["blocks.3.2"]}}).digest("units")
    with pytest.raises(ConfigError, match="units.model_layers: lite9 not in models"):
        StudyConfig.from_dict({"models": ["lite0"], "units": {"model_layers": {"lite9": []}}})


def test_substudy_folders_are_safe_for_python_models():
    from causalvis.pipeline.multimodel import substudy_folder

    assert substudy_folder("timm:resnet50") == "timm__resnet50"
    assert substudy_folder("lite0+sae1") == "lite0+sae1"
    a = substudy_folder("python:/home/me/my nets/net.py:make")
    b = substudy_folder("python:/home/me/other/net.py:make")
    assert a.startswith("python__net__make-") and a != b
    assert "/" not in a and " " not in a and len(a) < 100
    assert substudy_folder("python:pkg.mod:make").startswith("python__pkg.mod__make-")


def test_report_labels_python_models_readably():
    from causalvis.analysis.models import model_labels

    assert model_labels(["lite0", "python:/a/b/nets.py:vit", "python:pkg.mod:f"]) == {
        "lite0": "lite0", "python:/a/b/nets.py:vit": "nets.py:vit",
        "python:pkg.mod:f": "python:pkg.mod:f"}
    clash = ["python:/a/nets.py:vit", "python:/b/nets.py:vit"]
    assert model_labels(clash) == {m: m for m in clash}


def test_a_layer_missing_in_one_model_points_to_model_layers(tmp_path):
    from causalvis.errors import UnknownLayerError

    net = tmp_path / "tiny.py"
    net.write_text("import torch\n\ndef make():\n    return {'net': torch.nn.Sequential("
                   "torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)), 'input_size': 32}\n")
    root = tmp_path / "study"
    model = f"python:{net}:make"
    cfg = init_study(root, "quick", models=[model, "lite0"])
    cfg.units.layers = ["blocks.3.2"]
    cfg.images.max_images = 4
    cfg.save(StudyPaths(root).config)
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'blocks.3.2'.*"
                       r"\[units.model_layers\] \"python:") as err:
        build(root, progress=False)
    assert "\n" not in str(err.value)
