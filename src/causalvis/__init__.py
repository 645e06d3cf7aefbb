"""causalvis: the causal occlusion psychophysics benchmark as software."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("causalvis")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
