"""Study config: presets, TOML round trip, field-naming errors, docs in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from causalvis.config import StudyConfig, config_reference_markdown, preset
from causalvis.errors import ConfigError


@pytest.mark.parametrize("name", ["quick", "paper2021", "imi2023"])
def test_presets_round_trip_through_toml(tmp_path, name):
    cfg = preset(name)
    cfg.save(tmp_path / "study.toml")
    again = StudyConfig.load(tmp_path)
    assert again == cfg
    assert again.digest() == cfg.digest()


def test_paper2021_defaults_follow_the_protocol():
    cfg = preset("paper2021")
    assert cfg.occlusion.patch_fraction == 0.4 and cfg.occlusion.stride == 2
    assert cfg.occlusion.fill == "mean"
    assert (cfg.exemplars.n_top, cfg.exemplars.n_bins, cfg.exemplars.n_references) == (200, 10, 9)
    fv = cfg.featurevis
    assert (fv.size, fv.crop, fv.jitter, fv.jitter_after, fv.steps, fv.lr) == (
        256,
        16,
        16,
        8,
        2560,
        0.05,
    )
    assert fv.scales == [1.0, 0.975, 1.025, 0.95, 1.05] and fv.diversity == 100
    assert cfg.conditions.names == ["none", "natural", "synthetic", "mixed", "blur"]
    assert (cfg.conditions.mixed_natural, cfg.conditions.mixed_synthetic) == (5, 4)
    assert (cfg.sessions.n_catch, cfg.sessions.n_practice) == (3, 4)
    assert len(cfg.units.layers) * cfg.units.per_layer == 18
    ex = cfg.exclusion
    assert (ex.min_total_time_s, ex.max_total_time_s, ex.min_instruction_time_s) == (90, 900, 20)
    assert ex.max_practice_attempts == 5 and abs(ex.min_catch_accuracy - 2 / 3) < 1e-9


@pytest.mark.parametrize(
    "toml, field",
    [
        ("[occlusion]\npatch_fraction = 1.5\n", "occlusion.patch_fraction"),
        ("[occlusion]\nfill = 'purple'\n", "occlusion.fill"),
        ("[blur]\nkernel = 20\n", "blur.kernel"),
        ("[exemplars]\nn_top = 205\n", "exemplars"),
        ("[scan]\nbatch_size = 'big'\n", "scan.batch_size"),
        ("[units]\nunknown_key = 1\n", "units.unknown_key"),
    ],
)
def test_invalid_values_name_the_field(tmp_path, toml, field):
    (tmp_path / "study.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        StudyConfig.load(tmp_path)
    assert field in str(info.value)


def test_broken_toml_and_missing_config_are_clear(tmp_path):
    (tmp_path / "study.toml").write_text("[scan\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        StudyConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="causalvis init"):
        StudyConfig.load(tmp_path / "nothing")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


def test_config_reference_doc_is_current():
    doc = Path(__file__).parents[2] / "docs" / "config.md"
    assert doc.read_text() == config_reference_markdown(), (
        "docs/config.md is stale: run `python -m causalvis.config > docs/config.md`"
    )



def test_presets_render_only_methods_a_condition_uses():
    """The quick preset rendered MACO images that no condition showed (issue 18, 11c)."""
    from causalvis.pipeline.methods import generated_methods

    for name in ("quick", "paper2021", "imi2023"):
        assert preset(name).featurevis.also_render == [], name
    assert generated_methods(preset("quick")) == ["synthetic"]


def test_every_config_task_has_a_stage_list():
    """config validates task names; the pipeline registry runs them: the two must agree."""
    from causalvis.config import TASKS
    from causalvis.pipeline.registry import TASKS as STAGE_LISTS

    assert set(STAGE_LISTS) == set(TASKS)
