"""osteonode: a DICOM node for opportunistic osteoporosis screening on plain radiographs."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The version is read from the installed package's metadata when first asked for: importing
    # importlib.metadata and scanning the path costs the receiver's start-up tens of milliseconds.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("osteonode")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
