"""A small natural-stimuli study (48 sample images, two early layers of lite0), built once."""

from __future__ import annotations

import pytest
from natural_helpers import make_context, small_config


@pytest.fixture(scope="session")
def natural_study(tmp_path_factory, lite0, samples):
    """Context of a study that went through scan, units, exemplars and blur."""
    from causalvis.pipeline.blur import run_blur_stage
    from causalvis.pipeline.exemplars import run_exemplars_stage
    from causalvis.pipeline.scan import run_scan_stage
    from causalvis.pipeline.units import run_units_stage

    ctx = make_context(tmp_path_factory.mktemp("natural") / "study", small_config(), lite0,
                       samples)
    for stage in (run_scan_stage, run_units_stage, run_exemplars_stage, run_blur_stage):
        stage(ctx)
    return ctx
