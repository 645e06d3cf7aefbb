"""Feature visualization by activation maximization (Lucid recipe, batched) and MACO.

Modules: ``param`` (Fourier / pixel parameterizations, colour decorrelation),
``transforms`` (random, batched, differentiable robustness transforms), ``objectives``
(per-image objectives that index the batch), ``render`` (the optimization loop),
``maco`` (magnitude-constrained optimization) and ``recipe`` (the study's unit batches).
"""

from causalvis.stimuli.featurevis.maco import (
    MacoParam,
    MacoSettings,
    natural_magnitude,
    render_maco,
)
from causalvis.stimuli.featurevis.objectives import (
    ChannelMean,
    Direction,
    Diversity,
    Neuron,
    Objective,
    unit_objective,
)
from causalvis.stimuli.featurevis.param import FourierParam, PixelParam, make_param
from causalvis.stimuli.featurevis.recipe import UnitImages, render_side, render_units
from causalvis.stimuli.featurevis.render import RenderResult, RenderSettings, image_seed, render
from causalvis.stimuli.featurevis.transforms import TransformSpec

__all__ = [
    "ChannelMean",
    "Direction",
    "Diversity",
    "FourierParam",
    "MacoParam",
    "MacoSettings",
    "Neuron",
    "Objective",
    "PixelParam",
    "RenderResult",
    "RenderSettings",
    "TransformSpec",
    "UnitImages",
    "image_seed",
    "make_param",
    "natural_magnitude",
    "render",
    "render_maco",
    "render_side",
    "render_units",
    "unit_objective",
]
