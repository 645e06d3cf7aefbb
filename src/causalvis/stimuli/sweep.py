"""The occlusion sweep with the configured engine (pure: model and occluder in, maps out).

``incremental`` recomputes only the window each patch touches (exact, where the
architecture and layers allow it, :mod:`occlusion_incremental`), ``full`` runs a truncated
forward pass per occluded image (:mod:`occlusion`), ``auto`` picks incremental where it
can. Occlusion maps and the blur window search both sweep through here.
"""

from __future__ import annotations

from causalvis.errors import CausalvisError
from causalvis.stimuli.occlusion import Occluder, Sweep, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep


def sweep_layers(model, occluder: Occluder, layers: list[str], engine: str, batch_size: int,
                 on_batch=None) -> Sweep:
    """The sweep of ``layers`` on ``occluder`` with ``engine`` (see the module docstring)."""
    if engine != "full":
        try:
            inc = IncrementalSweep(model, layers)
        except NotImplementedError as exc:
            if engine == "incremental":
                raise CausalvisError(f"occlusion.engine = 'incremental': {exc}") from exc
        else:
            return inc.run(occluder, batch_size=batch_size, on_batch=on_batch)
    return occlusion_sweep(model, occluder, layers, batch_size=batch_size, on_batch=on_batch)
