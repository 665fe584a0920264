"""Analysis pipelines: a decoded radiograph in, a plain-data :class:`~.base.Result` out.

A pipeline knows nothing of networking, the database or DICOM encoding. :mod:`~.base` holds the
result types (no torch, so reports and the store read results without it); each implementation
has its module (:mod:`~.lumbar`, :mod:`~.chest`, :mod:`~.hip`, the card-driven :mod:`~.classifier`);
:mod:`~.registry` loads the configured pipelines from their model folders.
"""
