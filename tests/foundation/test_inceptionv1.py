"""The paper's network and units (issue 18, item 3): Lucid's InceptionV1 in Lucent's
layout, its 18 published units as the paper2021 preset, GoogLeNet's branch layers, and
the branch column of `causalvis layers`."""

from __future__ import annotations

import json

import pytest
import torch
from test_user_models import _cli  # the one CLI runner of these tests

from causalvis.config import StudyConfig, preset
from causalvis.models import ActivationProbe, list_layers, load_model, parse_unit
from causalvis.models.inceptionv1 import MIXED, branch_ranges, branch_widths
from causalvis.presets import PAPER2021_UNITS

# Lucent's InceptionV1: channels of every concatenated mixed layer.
MIXED_CHANNELS = {
    "mixed3a": 256, "mixed3b": 480, "mixed4a": 508, "mixed4b": 512, "mixed4c": 512,
    "mixed4d": 528, "mixed4e": 832, "mixed5a": 832, "mixed5b": 1024,
}
MIXED_SIZE = {"3": 28, "4": 14, "5": 7}  # spatial size at 224 px
# PROTOCOL.md "Units of the paper": (3x3 unit, pool unit) per mixed layer.
PAPER_UNITS = {
    "mixed3a": (189, 227), "mixed3b": (178, 430), "mixed4a": (257, 486),
    "mixed4b": (339, 491), "mixed4c": (247, 496), "mixed4d": (342, 483),
    "mixed4e": (524, 816), "mixed5a": (278, 743), "mixed5b": (684, 1007),
}


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return load_model("inceptionv1", weights="random")




def test_mixed_layer_shapes(inception):
    layers = {info.name: info for info in list_layers(inception)}
    for name, channels in MIXED_CHANNELS.items():
        info = layers[name]
        assert info.kind == "concat (pre-activation)"
        assert info.branch == "concat"
        assert info.channels == channels == sum(branch_widths(name).values())
        assert info.height == info.width == MIXED_SIZE[name[5]]
    # the next mixed layer reads the previous one's concatenation
    names = list(MIXED)
    for prev, nxt in zip(names, names[1:], strict=False):
        assert MIXED[nxt][0] == MIXED_CHANNELS[prev]
    assert inception.net.softmax2_pre_activation_matmul.out_features == 1008


def test_the_paper_units_are_3x3_and_pool_branch_channels():
    expected = [f"{layer}:{c}" for layer, pair in PAPER_UNITS.items() for c in pair]
    assert expected == PAPER2021_UNITS
    for layer, (u3, upool) in PAPER_UNITS.items():
        ranges = branch_ranges(layer)
        assert u3 in ranges["3x3"], layer
        assert upool in ranges["pool"], layer
        assert ranges["pool"].stop == MIXED_CHANNELS[layer]


def test_concat_is_pre_relu_branch_outputs_in_lucid_order(inception):
    x = torch.rand(2, 3, 224, 224)
    branch_convs = {
        "1x1": "mixed4a_1x1_pre_relu_conv", "3x3": "mixed4a_3x3_pre_relu_conv",
        "5x5": "mixed4a_5x5_pre_relu_conv", "pool": "mixed4a_pool_reduce_pre_relu_conv",
    }
    with ActivationProbe(inception, ["mixed4a", *branch_convs.values()], mode="map") as p:
        maps = p(x)
    concat = maps["mixed4a"]
    assert (concat < 0).any()  # pre-ReLU
    for branch, rng in branch_ranges("mixed4a").items():
        torch.testing.assert_close(concat[:, rng.start:rng.stop], maps[branch_convs[branch]])


def test_lucent_key_layout_and_round_trip(tmp_path, inception):
    state = inception.net.state_dict()
    keys = list(state)
    assert keys[:2] == ["conv2d0_pre_relu_conv.weight", "conv2d0_pre_relu_conv.bias"]
    assert keys[6:18:2] == [
        f"mixed3a_{b}_pre_relu_conv.weight"
        for b in ("1x1", "3x3_bottleneck", "5x5_bottleneck", "pool_reduce", "3x3", "5x5")
    ]
    assert keys[-1] == "softmax2_pre_activation_matmul.bias"
    assert len(keys) == (3 + 6 * 9) * 2 + 2
    assert tuple(state["mixed4a_3x3_pre_relu_conv.weight"].shape) == (204, 96, 3, 3)
    path = tmp_path / "inception5h.pth"
    torch.save(state, path)
    loaded = load_model("inceptionv1", weights=str(path))
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), inception(x))


def test_wrong_weights_are_one_error_line(tmp_path, capsys, inception):
    wrong = tmp_path / "googlenet.pth"
    torch.save(load_model("torchvision:googlenet", weights="random").net.state_dict(), wrong)
    bad_shape = dict(inception.net.state_dict())
    bad_shape["mixed3a_3x3_pre_relu_conv.bias"] = torch.zeros(7)
    reshaped = tmp_path / "bad_shape.pth"
    torch.save(bad_shape, reshaped)
    for path in (wrong, reshaped):
        code, _, err = _cli(capsys, "layers", "inceptionv1", "--weights", str(path))
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, err
        assert lines[0].startswith("error: ") and "do not fit" in lines[0]


def test_no_weights_offline_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    code, _, err = _cli(capsys, "layers", "inceptionv1")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "--weights" in lines[0] and "inception5h.pth" in lines[0]


def test_init_paper2021_inceptionv1_gives_the_18_units(tmp_path, capsys):
    study = tmp_path / "study"
    code, _, err = _cli(capsys, "init", str(study), "--preset", "paper2021", "--model",
                        "inceptionv1", "--weights", "random")
    assert code == 0, err
    cfg = StudyConfig.load(study)
    assert cfg.model.name == "inceptionv1"
    assert cfg.units.mode == "explicit"
    assert cfg.units.explicit == PAPER2021_UNITS
    assert len(cfg.units.explicit) == 18
    # every unit resolves in the network
    model = load_model("inceptionv1", weights="random")
    assert [parse_unit(u, model) for u in cfg.units.explicit] == [
        (layer, c) for layer, pair in PAPER_UNITS.items() for c in pair
    ]


@pytest.mark.parametrize("name", ["googlenet", "torchvision:googlenet"])
def test_googlenet_paper2021_units_are_3x3_and_pool_branch_bn(name):
    cfg = preset("paper2021", model=name)
    assert cfg.units.mode == "per_layer" and cfg.units.per_layer == 1
    assert len(cfg.units.layers) == 18  # one unit per branch layer = 2 per module
    model = load_model("torchvision:googlenet", weights="random")
    layers = {info.name: info for info in list_layers(model)}
    modules = {layer.split(".")[0] for layer in cfg.units.layers}
    assert modules == {f"inception{m}" for m in ("3a", "3b", "4a", "4b", "4c", "4d", "4e",
                                                 "5a", "5b")}
    for module in modules:
        got = sorted(layers[lay].branch for lay in cfg.units.layers if lay.startswith(module))
        assert got == ["3x3", "pool"], module
    for layer in cfg.units.layers:
        assert layers[layer].kind == "norm (pre-activation)"  # BN output, before the ReLU


def test_default_paper2021_units_unchanged():
    cfg = preset("paper2021")
    assert cfg.units.mode == "per_layer" and cfg.units.per_layer == 2
    assert len(cfg.units.layers) == 9


def test_layers_command_shows_branches(capsys):
    code, out, err = _cli(capsys, "layers", "torchvision:googlenet", "--weights", "random")
    assert code == 0, err
    header = out.splitlines()[1]
    assert "branch" in header
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert " 3x3 " in rows["inception4c.branch2.1.bn"]
    assert " pool " in rows["inception4c.branch4.1.bn"]
    assert " 5x5 reduce " in rows["inception4c.branch3.0.bn"]
    assert " concat " in rows["inception4c"]
    assert " - " in rows["conv1.bn"]
    code, out, err = _cli(capsys, "layers", "inceptionv1", "--weights", "random", "--json")
    assert code == 0, err
    branches = {row["name"]: row["branch"] for row in json.loads(out)}
    assert branches["mixed5b"] == "concat"
    assert branches["mixed5b_3x3_pre_relu_conv"] == "3x3"
    assert branches["mixed5b_3x3_bottleneck_pre_relu_conv"] == "3x3 reduce"
    assert branches["mixed5b_pool_reduce_pre_relu_conv"] == "pool"
    assert branches["conv2d2_pre_relu_conv"] == ""


def test_fast_local_response_norm_equals_torch(inception):
    import torch.nn.functional as F

    from causalvis.models.inceptionv1 import _LRN

    for channels in (64, 192):
        x = torch.randn(2, channels, 7, 7) * 40
        for layout in (torch.contiguous_format, torch.channels_last):
            y = inception.net._lrn(x.to(memory_format=layout))
            torch.testing.assert_close(y, F.local_response_norm(x, **_LRN))
