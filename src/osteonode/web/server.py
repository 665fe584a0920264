"""The node's HTTP port: ``/health``, ``/metrics``, the admin page and its two actions.

The standard library's threading HTTP server runs in a background thread of each node process. It
serves a handful of pages to operators and a monitoring system on a loopback port, which needs no
web framework; Jinja2 (already installed with torch) renders the page with HTML escaping on.

Routes
------
``GET /health``
    JSON from :func:`osteonode.web.health.check_health`; 503 when a check fails.
``GET /metrics``
    Prometheus text format (:mod:`osteonode.web.metrics`).
``GET /``
    The admin page: queue, recent results with Secondary Capture thumbnails, dead letters, models
    and their cards, routing rules and the routing file tester.
``GET /thumbnails/<delivery id>.png``
    A Secondary Capture the node made, as a small PNG.
``POST /deliveries/<delivery id>/retry``
    Send a dead delivery again (as ``osteonode deliveries retry``).
``POST /route``
    Route an uploaded file with the node's rules and show the decision (as ``osteonode route``).

Both POST routes need the ``[http] admin_token``, given as the form field ``token`` or as
``Authorization: Bearer <token>``, compared in constant time. Without a configured token they are
refused (403) and the page is read-only. A form posted from another site cannot know the token,
so no separate CSRF token is needed.
"""

from __future__ import annotations

import email.parser
import email.policy
import hmac
import json
import re
import tempfile
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import generate_latest

from osteonode import __version__
from osteonode.config import NodeConfig
from osteonode.routing import Route, route_file, to_enabled_pipelines
from osteonode.store.db import Database
from osteonode.store.deliveries import DeliveryStateError, requeue_delivery
from osteonode.store.spool import Spool
from osteonode.store.tables import utc_now
from osteonode.web.admin import admin_view, capture_delivery
from osteonode.web.health import ProcessParts, check_health
from osteonode.web.metrics import metrics_registry
from osteonode.web.thumbnails import ThumbnailError, thumbnail_png

__all__ = ["AdminServer"]

log = structlog.get_logger(__name__)

_MEBIBYTE = 1024 * 1024
_THUMBNAIL = re.compile(r"/thumbnails/([0-9]{1,18})\.png")
_RETRY = re.compile(r"/deliveries/([0-9]{1,18})/retry")
#: The classic text exposition format, which generate_latest writes and every Prometheus reads.
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Longest form body the retry action reads (it only carries the token).
_MAX_FORM_BYTES = 64 * 1024


class _RequestError(Exception):
    """A request answered with an error status and a sentence for the operator."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AdminServer:
    """The HTTP port of one node process.

    Parameters
    ----------
    config
        The node configuration (``[http]`` and what the page shows).
    database
        The node's database.
    spool
        The node's spool (thumbnails read the Secondary Captures from it).
    parts
        What runs in this process, for ``/health`` and the per-process metrics.
    """

    def __init__(
        self, config: NodeConfig, database: Database, spool: Spool, parts: ProcessParts
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise TypeError(f"config must be a NodeConfig, not {type(config).__name__}")
        if not isinstance(parts, ProcessParts):
            raise TypeError(f"parts must be a ProcessParts, not {type(parts).__name__}")
        self.config = config
        self.database = database
        self.spool = spool
        self.parts = parts
        self.registry = metrics_registry(database, parts)
        self.templates = Environment(
            loader=PackageLoader("osteonode.web", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one)."""
        if self._server is None:
            return self.config.http.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind the port and serve in a background thread.

        Raises
        ------
        OSError
            If the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the HTTP server is already running")
        http = self.config.http
        server = ThreadingHTTPServer((http.host, http.port), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="osteonode-http", daemon=True
        )
        self._thread.start()
        log.info(
            "http_listening",
            host=http.host,
            port=self.port,
            admin_actions=http.admin_token is not None,
        )

    def stop(self) -> None:
        """Stop serving and close the port."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    # Answers, one per route; each returns (status, content type, body).

    def health(self) -> tuple[HTTPStatus, str, bytes]:
        """``/health``: every check as JSON; 503 when one fails."""
        health = check_health(self.config, self.database, self.spool, self.parts)
        body = json.dumps({**health.to_dict(), "version": __version__}, indent=2).encode()
        return HTTPStatus(health.http_status), "application/json", body

    def metrics(self) -> tuple[HTTPStatus, str, bytes]:
        """``/metrics``: the node's figures in the Prometheus text format."""
        return HTTPStatus.OK, _METRICS_CONTENT_TYPE, generate_latest(self.registry)

    def page(
        self,
        notice: str | None = None,
        route_answer: dict[str, Any] | None = None,
        status: HTTPStatus = HTTPStatus.OK,
    ) -> tuple[HTTPStatus, str, bytes]:
        """The admin page, with an optional notice and routing-tester answer."""
        with self.database.session() as session:
            view = admin_view(session, self.config, utc_now())
        health = check_health(self.config, self.database, self.spool, self.parts)
        html = self.templates.get_template("admin.html").render(
            view=view,
            health=health,
            version=__version__,
            node=self.config.node,
            actions_enabled=self.config.http.admin_token is not None,
            notice=notice,
            route_answer=route_answer,
            pipelines=self.config.pipelines,
            loaded=self.parts.pipelines,
        )
        return status, "text/html; charset=utf-8", html.encode()

    def thumbnail(self, delivery_id: int) -> tuple[HTTPStatus, str, bytes]:
        """A PNG of the Secondary Capture of a delivery; 404 when there is none or it is purged."""
        with self.database.session() as session:
            relative = capture_delivery(session, delivery_id)
        if relative is None:
            raise _RequestError(
                HTTPStatus.NOT_FOUND, f"no Secondary Capture delivery {delivery_id}"
            )
        try:
            png = thumbnail_png(self.spool.path(relative))
        except ThumbnailError as error:
            raise _RequestError(HTTPStatus.NOT_FOUND, str(error)) from None
        return HTTPStatus.OK, "image/png", png

    def retry(self, delivery_id: int) -> tuple[HTTPStatus, str, bytes]:
        """Queue a dead delivery again (the caller has checked the token); the page says so."""
        try:
            with self.database.session() as session:
                requeue_delivery(session, delivery_id)
        except (LookupError, DeliveryStateError) as error:
            return self.page(notice=f"not retried: {error}", status=HTTPStatus.CONFLICT)
        log.info("delivery_retry_requested", delivery_id=delivery_id, via="admin page")
        return self.page(notice=f"delivery {delivery_id} queued again")

    def route_upload(self, name: str, content: bytes) -> tuple[HTTPStatus, str, bytes]:
        """Route an uploaded file with the node's rules; the page shows the decision."""
        with tempfile.TemporaryDirectory(prefix="osteonode-route-") as directory:
            path = Path(directory) / "upload.dcm"
            path.write_bytes(content)
            decision = to_enabled_pipelines(
                route_file(path, self.config.routing), self.config.pipelines
            )
        if isinstance(decision, Route):
            answer = {
                "file": name,
                "pipelines": ", ".join(decision.pipelines),
                "rule": decision.rule,
            }
        else:
            answer = {
                "file": name,
                "skip": decision.reason.value,
                "detail": decision.detail,
                "rule": decision.rule or "(node check)",
            }
        return self.page(route_answer=answer)

    def authorise(self, presented: str | None) -> None:
        """Refuse unless ``presented`` is the configured admin token."""
        token = self.config.http.admin_token
        if token is None:
            raise _RequestError(
                HTTPStatus.FORBIDDEN,
                "this action is disabled: set [http] admin_token"
                " (or OSTEONODE_HTTP__ADMIN_TOKEN) to enable it",
            )
        if presented is None or not hmac.compare_digest(
            presented.encode("utf-8"), token.get_secret_value().encode("utf-8")
        ):
            raise _RequestError(HTTPStatus.UNAUTHORIZED, "wrong or missing admin token")


def _handler_class(server: AdminServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``server`` (http.server makes one handler per request)."""

    class Handler(_Handler):
        admin = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    admin: AdminServer
    server_version = f"osteonode/{__version__}"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = self.path.split("?", 1)[0]
        routes: dict[str, Callable[[], tuple[HTTPStatus, str, bytes]]] = {
            "/health": self.admin.health,
            "/metrics": self.admin.metrics,
            "/": self.admin.page,
        }
        if path in routes:
            self._answer(routes[path])
        elif match := _THUMBNAIL.fullmatch(path):
            self._answer(lambda: self.admin.thumbnail(int(match.group(1))))
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if match := _RETRY.fullmatch(path):
            self._answer(lambda: self._retry(int(match.group(1))))
        elif path == "/route":
            self._answer(self._route)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _retry(self, delivery_id: int) -> tuple[HTTPStatus, str, bytes]:
        body = self._body(_MAX_FORM_BYTES)
        fields = parse_qs(body.decode("utf-8", "replace"))
        self.admin.authorise(self._bearer() or next(iter(fields.get("token", [])), None))
        return self.admin.retry(delivery_id)

    def _route(self) -> tuple[HTTPStatus, str, bytes]:
        content_type = self.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data"):
            raise _RequestError(
                HTTPStatus.BAD_REQUEST, "upload the file as multipart/form-data (field 'file')"
            )
        body = self._body(self.admin.config.http.max_upload_mb * _MEBIBYTE)
        fields, files = _multipart(content_type, body)
        self.admin.authorise(self._bearer() or fields.get("token"))
        if "file" not in files:
            raise _RequestError(HTTPStatus.BAD_REQUEST, "no file uploaded (field 'file')")
        name, content = files["file"]
        return self.admin.route_upload(name, content)

    def _bearer(self) -> str | None:
        authorization = self.headers.get("Authorization", "")
        return authorization[7:].strip() if authorization.startswith("Bearer ") else None

    def _body(self, limit: int) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required") from None
        if length < 0 or length > limit:
            raise _RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body over {limit // _MEBIBYTE or 1} MiB",
            )
        return self.rfile.read(length)

    def _answer(self, make: Callable[[], tuple[HTTPStatus, str, bytes]]) -> None:
        try:
            status, content_type, body = make()
        except _RequestError as refused:
            log.warning(
                "http_request_refused",
                path=self.path,
                status=int(refused.status),
                reason=refused.message,
            )
            # The connection may still hold an unread body: do not keep it alive.
            self.close_connection = True
            status, content_type, body = (
                refused.status,
                "text/plain; charset=utf-8",
                f"{refused.message}\n".encode(),
            )
        except Exception as error:  # noqa: BLE001 - an error page, never a dead server thread
            log.exception(
                "http_request_failed", path=self.path, error=f"{type(error).__name__}: {error}"
            )
            status, content_type = HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8"
            body = f"internal error: {type(error).__name__}; see the node's log\n".encode()
        self._send(status, content_type, body)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'"
        )
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        # Access lines go to the structured log at debug level instead of stderr.
        log.debug("http_request", client=self.client_address[0], line=format % args)


def _multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """Text fields and files of a multipart/form-data body (``email`` parses the MIME parts)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1") + body
    )
    if not message.is_multipart():
        raise _RequestError(HTTPStatus.BAD_REQUEST, "the multipart body cannot be read")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, payload)
        else:
            fields[name] = payload.decode("utf-8", "replace")
    return fields, files
