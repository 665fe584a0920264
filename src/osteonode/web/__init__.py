"""The node's HTTP port: health, Prometheus metrics and the admin page (:class:`AdminServer`)."""

from osteonode.web.health import ProcessParts
from osteonode.web.server import AdminServer

__all__ = ["AdminServer", "ProcessParts"]
