"""The presets of ``causalvis init --preset`` as data: overrides of the config defaults.

A preset is a nested dict of ``StudyConfig`` fields that differ from the defaults (the
``paper2021`` values of PROTOCOL.md); ``config.preset`` merges it onto the defaults. A
preset runs the task its overrides name (default causal occlusion); it can be switched to
another task listed in its ``variants``: ``TASK_VARIANTS[task]`` is applied, then the
preset's own variant overrides. ``MODEL_UNITS`` gives a model's ``units`` overrides per
preset (its unit layers, or the paper's explicit units), for configs that name none.
Plain data, no imports: adding a preset or a model's layers touches only this file.
"""

from __future__ import annotations

from typing import Any

# IMI's main experiments: queries just below the references (its harder windows, hard99 /
# hard95 / hard85, were separate experiments: one `exemplars.difficulty` per study).
IMI_DIFFICULTY = "easy"

TASK_VARIANTS: dict[str, dict[str, Any]] = {
    # The 2-AFC variant of a causal-occlusion preset: IMI exemplar scheme (as many minimal
    # as maximal references: each preset's variant), natural vs synthetic, IMI catch rule.
    "two_afc": {
        "task": "two_afc",
        "exemplars": {"scheme": "imi", "difficulty": IMI_DIFFICULTY},
        "conditions": {"names": ["natural", "synthetic"]},
        "featurevis": {"n_non_diverse": 1, "also_render": []},
        "sessions": {"catch_rule": "query_in_references"},
        "server": {"correct_counter": True},
    },
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "overrides": {
            "scan": {"batch_size": 32, "shard_size": 256},
            "units": {"mode": "per_layer", "per_layer": 1, "n_practice_units": 2,
                      "n_catch_units": 1},
            # Five references instead of nine keep the demo within minutes on 2 CPU cores.
            "exemplars": {"n_top": 100, "n_bins": 10, "n_image_sets": 2, "n_references": 5},
            # mixed reuses the synthetic batch's first images: one render fewer
            "conditions": {"n_references": 5, "mixed_natural": 3, "mixed_synthetic": 2,
                           "mixed_synthetic_source": "synthetic"},
            "occlusion": {"stride": 12, "batch_size": 64},
            "blur": {"stride": 45},
            "featurevis": {
                "size": 128, "crop": 8, "jitter": 8, "jitter_after": 4, "steps": 48,
                "diversity": 20.0, "n_images": 5, "maco_steps": 24, "maco_canvas": 192,
            },
            "sessions": {"n_catch": 1, "n_practice": 2, "max_units_per_session": 18},
        },
        "variants": {"two_afc": {"exemplars": {"n_references": 5, "n_min_references": 5}}},
    },
    "paper2021": {
        "overrides": {"units": {"per_layer": 2}},
        "variants": {"two_afc": {"exemplars": {"n_references": 9, "n_min_references": 9}}},
    },
    "imi2023": {
        "overrides": {
            "task": "two_afc",
            "units": {"mode": "uniform_layer", "n_units": 84},
            "exemplars": {
                # IMI's 20 batches: references span the top / bottom 20 × 9 = 180 ranks.
                "scheme": "imi", "n_references": 9, "n_min_references": 9,
                "n_image_sets": 20, "difficulty": IMI_DIFFICULTY,
            },
            "conditions": {"names": ["natural", "synthetic"]},
            "sessions": {
                "n_catch": 5, "catch_rule": "query_in_references", "n_practice": 5,
                "max_units_per_session": 40,
            },
            "exclusion": {
                "min_catch_accuracy": 0.8, "min_total_time_s": 135.0,
                "max_total_time_s": 2500.0, "min_instruction_time_s": 15.0,
                "max_practice_attempts": 3, "min_choices_per_side": 5,
                # The buttons are locked for the first 1.5 s: faster is not a look.
                "min_rt_ms": 1800.0,
            },
            "experiment": {"min_view_ms": 1500},
            "featurevis": {"n_non_diverse": 1},
            "server": {"correct_counter": True},
        },
        "variants": {},
    },
}

_LITE0_QUICK_LAYERS = ["blocks.2.1", "blocks.3.2", "blocks.4.2", "blocks.5.3"]
# Nine block outputs spanning lite0's depth; two units each = the paper's 18 per session.
_LITE0_PAPER_LAYERS = [
    "blocks.1.1", "blocks.2.1", "blocks.3.0", "blocks.3.2", "blocks.4.1", "blocks.4.2",
    "blocks.5.1", "blocks.5.3", "blocks.6.0",
]
_INCEPTION_MODULES = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
# The paper's 18 units (PROTOCOL.md "Units of the paper"): per mixed layer of Lucid's
# InceptionV1, one channel of the 3x3 branch and one of the pool projection, as channel
# indices of the pre-ReLU concatenated layer.
PAPER2021_UNITS = [
    "mixed3a:189", "mixed3a:227", "mixed3b:178", "mixed3b:430", "mixed4a:257", "mixed4a:486",
    "mixed4b:339", "mixed4b:491", "mixed4c:247", "mixed4c:496", "mixed4d:342", "mixed4d:483",
    "mixed4e:524", "mixed4e:816", "mixed5a:278", "mixed5a:743", "mixed5b:684", "mixed5b:1007",
]
# torchvision GoogLeNet: the pre-ReLU BN outputs of each Inception module's 3x3 branch and
# pool-projection branch. One random unit per branch layer = the paper's 2 per module
# (per_layer = 2 over the module outputs would draw from any branch, post-ReLU).
_GOOGLENET_PAPER = {
    "layers": [
        f"inception{m}.{branch}.bn" for m in _INCEPTION_MODULES
        for branch in ("branch2.1", "branch4.1")
    ],
    "per_layer": 1,
}
# A model's `units` overrides per preset, applied when the config names no unit layers:
# the paper's (pre-nonlinearity) unit layers or units of each supported family.
MODEL_UNITS: dict[str, dict[str, dict[str, Any]]] = {
    "lite0": {
        "quick": {"layers": _LITE0_QUICK_LAYERS},
        "paper2021": {"layers": _LITE0_PAPER_LAYERS},
        "imi2023": {"layers": _LITE0_QUICK_LAYERS},
    },
    "inceptionv1": {
        "paper2021": {"mode": "explicit", "explicit": PAPER2021_UNITS},
        "quick": {"layers": ["mixed3b", "mixed4b", "mixed4d", "mixed5a"]},
        "imi2023": {"layers": [f"mixed{m}" for m in _INCEPTION_MODULES]},
    },
    "googlenet": {"paper2021": _GOOGLENET_PAPER},
    "torchvision:googlenet": {"paper2021": _GOOGLENET_PAPER},
}
