"""Analysis pipelines: a decoded radiograph in, a plain-data :class:`~.base.Result` out.

A pipeline knows nothing of networking, the database or DICOM encoding. :mod:`~.base` holds the
result types (no torch, so reports and the store read results without it); each implementation
has its module (:mod:`~.lumbar`, and the card-driven :mod:`~.classifier` with :mod:`~.regions`, of
which :mod:`~.chest` and :mod:`~.hip` are the papers' descriptions);
:mod:`~.registry` loads the configured pipelines from their model folders.
"""
