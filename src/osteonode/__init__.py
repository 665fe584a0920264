"""osteonode: a DICOM node for opportunistic osteoporosis screening on plain radiographs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("osteonode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
