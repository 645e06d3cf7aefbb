"""User-facing errors.

Anything a user can cause (bad path, unknown model or layer, invalid config, corrupt
input) raises a :class:`CausalvisError`; the CLI prints its message as one line and exits
non-zero, never with a traceback.
"""


class CausalvisError(Exception):
    """An error caused by user input; the message must say what to fix."""


class UnknownModelError(CausalvisError):
    pass


class UnknownLayerError(CausalvisError):
    pass


class CorruptImageError(CausalvisError):
    pass


class OfflineWeightsError(CausalvisError):
    pass


class ConfigError(CausalvisError):
    pass
