"""Model zoo, layer catalogue and the ActivationProbe."""

from causalvis.models.custom import UserModel
from causalvis.models.dictionary import attach_dictionaries, load_dictionary
from causalvis.models.layers import LayerInfo, list_layers, parse_unit, resolve_layer
from causalvis.models.probe import ActivationProbe, probe_tensor
from causalvis.models.zoo import CausalvisModel, ModelSpec, available_models, load_model

__all__ = [
    "ActivationProbe",
    "CausalvisModel",
    "LayerInfo",
    "ModelSpec",
    "UserModel",
    "attach_dictionaries",
    "available_models",
    "list_layers",
    "load_dictionary",
    "load_model",
    "parse_unit",
    "probe_tensor",
    "resolve_layer",
]
