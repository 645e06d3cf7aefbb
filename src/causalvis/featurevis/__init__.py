"""Feature visualization by activation maximization (Lucid recipe, batched) and MACO.

Modules: ``param`` (Fourier / pixel parameterizations, colour decorrelation),
``transforms`` (random, batched, differentiable robustness transforms), ``objectives``
(per-image objectives that index the batch), ``render`` (the optimization loop),
and ``maco`` (magnitude-constrained optimization). The study's unit batches (a
``FeatureVisConfig`` turned into render calls) live in ``causalvis.pipeline.featurevis_recipe``:
this package knows nothing of study configs.
"""

from causalvis.featurevis.maco import (
    MacoParam,
    MacoSettings,
    natural_magnitude,
    render_maco,
)
from causalvis.featurevis.objectives import (
    ChannelMean,
    Direction,
    Diversity,
    Neuron,
    Objective,
    unit_objective,
)
from causalvis.featurevis.param import FourierParam, PixelParam, make_param
from causalvis.featurevis.render import RenderResult, RenderSettings, image_seed, render
from causalvis.featurevis.transforms import TransformSpec

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
    "image_seed",
    "make_param",
    "natural_magnitude",
    "render",
    "render_maco",
    "unit_objective",
]
