"""Analysis pipelines and the registry the workers look them up in.

A pipeline takes one decoded radiograph and returns a plain-data result; it knows nothing of
networking, the database or DICOM encoding. The registry below is empty until the pipeline issues
(lumbar, chest, hip) land: until then a routed job stays ``queued`` for its pipeline, so nothing the
node received is lost while the models are missing.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Pipeline", "available"]


@runtime_checkable
class Pipeline(Protocol):
    """What a worker needs from an analysis pipeline.

    Attributes
    ----------
    name
        The pipeline's name, the value routing rules use (``lumbar``, ``chest``, ``hip``).

    Notes
    -----
    The argument and result types are narrowed by the pipeline issues (``Radiograph`` from
    ``osteonode.imaging.pixels`` and the ``Result`` types of ``osteonode.pipelines.base``); the
    contract here is only the shape a worker relies on.
    """

    name: str

    def run(self, radiograph: Any) -> Any:
        """Analyse one radiograph and return the pipeline's result."""
        ...


def available() -> dict[str, Pipeline]:
    """The pipelines this installation can run, by name.

    Returns
    -------
    dict of str to Pipeline
        Empty for now: no pipeline is installed yet, so routed jobs wait in the ``queued`` state.
    """
    return {}
