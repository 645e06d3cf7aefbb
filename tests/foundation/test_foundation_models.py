"""The embedded weights are real, layers are discoverable, the probe is exact and lean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from causalvis.errors import OfflineWeightsError, UnknownLayerError, UnknownModelError
from causalvis.images import pil_to_tensor, prepare_image
from causalvis.models import ActivationProbe, list_layers, load_model, parse_unit, probe_tensor


def _photo(name: str, size: int) -> torch.Tensor:
    import skimage.data

    return pil_to_tensor(prepare_image(Image.fromarray(getattr(skimage.data, name)()), size))


def test_embedded_lite0_weights_classify_real_photos(lite0):
    x = torch.stack([_photo("chelsea", 224), _photo("coffee", 224)])
    with torch.inference_mode():
        top = lite0(x).argmax(dim=1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea classified as {top[0]}"
    assert top[1] in (967, 968), f"coffee classified as {top[1]}"


@pytest.mark.parametrize("variant", [1, 2])
def test_embedded_lite1_lite2_load_and_classify(variant):
    model = load_model(f"lite{variant}")
    x = _photo("chelsea", model.input_size)[None]
    with torch.inference_mode():
        assert 281 <= int(model(x).argmax()) <= 285


def test_unknown_model_and_offline_weights_are_clear_errors(tmp_path):
    with pytest.raises(UnknownModelError, match="unknown model"):
        load_model("nope")
    with pytest.raises(OfflineWeightsError, match="--weights"):
        load_model("timm:resnet18")
    with pytest.raises(OfflineWeightsError, match="not found"):
        load_model("lite0", weights=str(tmp_path / "missing.pth"))


def test_timm_and_torchvision_models_with_random_and_file_weights(tmp_path):
    tv = load_model("torchvision:googlenet", weights="random")
    names = [info.name for info in list_layers(tv)]
    assert "inception4a" in names and "inception4a.branch1.bn" in names
    path = tmp_path / "r18.pth"
    net = load_model("timm:resnet18", weights="random")
    torch.save(net.net.state_dict(), path)
    again = load_model("timm:resnet18", weights=str(path))
    x = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(net(x), again(x))


def test_layer_catalogue_lite0_in_forward_order(lite0):
    layers = list_layers(lite0)
    names = [info.name for info in layers]
    assert names[0] == "bn1" and names[-1] == "bn2"
    assert [info.order for info in layers] == list(range(len(layers)))
    block = next(info for info in layers if info.name == "blocks.3.2")
    assert (block.channels, block.height, block.width, block.kind) == (80, 14, 14, "block")
    # pre-activation tensors can be negative (taken before ReLU6)
    bn = next(info for info in layers if info.name == "blocks.3.2.bn1")
    assert bn.kind.startswith("norm")


def test_parse_unit_validates_layer_and_channel(lite0):
    assert parse_unit("blocks.3.2:17", lite0) == ("blocks.3.2", 17)
    with pytest.raises(UnknownLayerError, match="unknown layer"):
        parse_unit("blocks.99:1", lite0)
    with pytest.raises(UnknownLayerError, match="channels 0..79"):
        parse_unit("blocks.3.2:80", lite0)
    with pytest.raises(UnknownLayerError, match="LAYER:CHANNEL"):
        parse_unit("blocks.3.2", lite0)


def test_probe_matches_full_forward_and_is_pre_activation(lite0):
    x = torch.rand(3, 3, 224, 224)
    captured = {}
    bn = lite0.net.get_submodule("blocks.2.1.bn1")
    handles = [
        lite0.net.get_submodule("blocks.4.2").register_forward_hook(
            lambda m, i, o: captured.__setitem__("block", o.mean((2, 3)))
        ),
        bn.act.register_forward_pre_hook(
            lambda m, i: captured.__setitem__("pre", i[0].mean((2, 3)))
        ),
        bn.register_forward_hook(lambda m, i, o: captured.__setitem__("post", o.mean((2, 3)))),
    ]
    with torch.inference_mode():
        lite0(x)
    for h in handles:
        h.remove()
    with ActivationProbe(lite0, ["blocks.4.2", "blocks.2.1.bn1"]) as probe:
        out = probe(x)
    torch.testing.assert_close(out["blocks.4.2"], captured["block"])
    torch.testing.assert_close(out["blocks.2.1.bn1"], captured["pre"])
    assert (out["blocks.2.1.bn1"] < 0).any(), "pre-activation values must include negatives"
    assert not torch.allclose(captured["pre"], captured["post"])


def test_probe_truncates_after_deepest_layer_and_removes_hooks(lite0):
    calls = []
    late = lite0.net.get_submodule("blocks.6.0").register_forward_hook(lambda *a: calls.append(1))
    try:
        with ActivationProbe(lite0, ["blocks.2.1"]) as probe:
            probe(torch.rand(1, 3, 224, 224))
        assert calls == [], "modules after the deepest requested layer must not run"
    finally:
        late.remove()
    for module in lite0.net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_probe_map_mode_and_grad_mode(lite0):
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    with ActivationProbe(lite0, ["blocks.3.2"], mode="map", grad=True) as probe:
        fmap = probe(x)["blocks.3.2"]
    assert fmap.shape == (2, 80, 14, 14)
    fmap[:, 5].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in lite0.parameters())


def test_probe_tensor_batches_consistently(lite0):
    x = torch.rand(5, 3, 224, 224)
    a = probe_tensor(lite0, x, ["blocks.1.1"], batch_size=2)["blocks.1.1"]
    b = probe_tensor(lite0, x, ["blocks.1.1"], batch_size=5)["blocks.1.1"]
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
