"""The OHIF viewer on loopback, reading a local Orthanc through DICOMweb: the radiologist's view.

The ``@ohif/app`` npm package ships the built viewer (``dist/``: ``index.html``, bundles, WebAssembly
codecs). :class:`OhifViewer` serves that folder as it is, answers ``/app-config.js`` with a
configuration whose one data source is Orthanc's DICOMweb, and forwards ``/dicom-web/...`` to
Orthanc, so the viewer and its data share one origin (Orthanc sends no CORS headers). Any other
path is the single-page application's own route (``/viewer?StudyInstanceUIDs=...``) and gets
``index.html``. ``make install`` puts the package under ``var/ohif/``.
"""

from __future__ import annotations

import http.server
import json
import mimetypes
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from osteonode.peers.orthanc import Orthanc, free_port

__all__ = ["DEFAULT_OHIF_DIST", "OhifError", "OhifViewer"]

#: Where ``make install`` unpacks the ``@ohif/app`` package's built viewer.
DEFAULT_OHIF_DIST = Path("var/ohif/package/dist")

#: The DICOMweb root the viewer asks, on its own origin, and that is forwarded to Orthanc.
_DICOMWEB_PREFIX = "/dicom-web"
#: Bytes per read when forwarding a DICOMweb answer (pixel data can be large).
_CHUNK = 1 << 16
#: Answer headers of Orthanc passed on to the viewer; hop-by-hop ones are not.
_FORWARDED_HEADERS = ("Content-Type", "Content-Length", "ETag", "Last-Modified")

#: The configuration script. OHIF's first-visit tour would cover the viewport of every fresh
#: browser profile (the demo's, the tests'); it is marked as seen.
_APP_CONFIG = """window.config = {config};
localStorage.setItem("shownTours", JSON.stringify(["basicViewerTour"]));
"""


class OhifError(RuntimeError):
    """The viewer's files are missing or its server did not start."""


def _app_config() -> dict[str, object]:
    """OHIF's configuration: one DICOMweb data source on this origin, no study list pruning."""
    return {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "maxNumberOfWebWorkers": 2,
        "defaultDataSourceName": "orthanc",
        "investigationalUseDialog": {"option": "never"},
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "orthanc",
                "configuration": {
                    "friendlyName": "osteonode's Orthanc",
                    "name": "orthanc",
                    "wadoUriRoot": _DICOMWEB_PREFIX,
                    "qidoRoot": _DICOMWEB_PREFIX,
                    "wadoRoot": _DICOMWEB_PREFIX,
                    "qidoSupportsIncludeField": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "omitQuotationForMultipartRequest": True,
                    "bulkDataURI": {"enabled": True},
                },
            }
        ],
    }


class OhifViewer:
    """A small HTTP server for OHIF's built viewer and the DICOMweb of one Orthanc.

    Parameters
    ----------
    dist : pathlib.Path
        The ``dist/`` folder of the ``@ohif/app`` package (it holds ``index.html``).
    orthanc : Orthanc
        The PACS whose studies the viewer shows; it must run with ``dicomweb=True``.

    Raises
    ------
    OhifError
        When `dist` holds no built viewer.
    TypeError
        When `orthanc` is not an :class:`Orthanc`.
    """

    def __init__(self, dist: Path, orthanc: Orthanc) -> None:
        dist = Path(dist)
        if not (dist / "index.html").is_file():
            raise OhifError(
                f"no OHIF viewer at {dist} (index.html missing); `make install` unpacks"
                " the @ohif/app package there"
            )
        if not isinstance(orthanc, Orthanc):
            raise TypeError(f"orthanc must be an Orthanc, not {type(orthanc).__name__}")
        self.dist = dist.resolve()
        self.orthanc = orthanc
        self.port = free_port()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The viewer's base address."""
        return f"http://127.0.0.1:{self.port}"

    def study_url(self, study_instance_uid: str, series_instance_uid: str | None = None) -> str:
        """The address that opens one study in OHIF's basic viewer.

        Parameters
        ----------
        study_instance_uid : str
            The study to open.
        series_instance_uid : str, optional
            The series shown first (an SR series opens with its regions drawn on the film);
            OHIF's first series when not given.
        """
        query = {"StudyInstanceUIDs": study_instance_uid}
        if series_instance_uid is not None:
            query["initialSeriesInstanceUID"] = series_instance_uid
        return f"{self.url}/viewer?{urllib.parse.urlencode(query)}"

    def start(self) -> Self:
        """Serve on 127.0.0.1:`port` from a background thread."""
        if self._server is not None:
            raise OhifError("the viewer is already being served")
        handler = _handler_class(self.dist, self.orthanc.url + _DICOMWEB_PREFIX)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ohif-viewer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_class(dist: Path, dicomweb_root: str) -> type[http.server.BaseHTTPRequestHandler]:
    config = _APP_CONFIG.format(config=json.dumps(_app_config(), indent=2)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the viewer fetches hundreds of files per study."""

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == _DICOMWEB_PREFIX or path.startswith(_DICOMWEB_PREFIX + "/"):
                self._forward(dicomweb_root + self.path[len(_DICOMWEB_PREFIX) :])
            elif path == "/app-config.js":
                self._send(200, "application/javascript", config)
            else:
                self._send_file(path)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, path: str) -> None:
            target = (dist / urllib.parse.unquote(path).lstrip("/")).resolve()
            if not target.is_relative_to(dist):
                self._send(404, "text/plain", b"not found")
                return
            if not target.is_file():
                # A route of the single-page application, or a missing file of it.
                if Path(path).suffix:
                    self._send(404, "text/plain", b"not found")
                    return
                target = dist / "index.html"
            content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if target.suffix == ".wasm":
                content_type = "application/wasm"
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(target.stat().st_size))
            self.end_headers()
            with target.open("rb") as source:
                shutil.copyfileobj(source, self.wfile, _CHUNK)

        def _forward(self, url: str) -> None:
            headers = {
                key: value
                for key, value in self.headers.items()
                if key.lower() in ("accept", "range")
            }
            request = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    self.send_response(answer.status)
                    for key in _FORWARDED_HEADERS:
                        if answer.headers.get(key):
                            self.send_header(key, answer.headers[key])
                    self.end_headers()
                    shutil.copyfileobj(answer, self.wfile, _CHUNK)
            except urllib.error.HTTPError as error:
                self._send(error.code, "text/plain", error.read())
            except OSError as error:
                self._send(502, "text/plain", f"Orthanc did not answer: {error}".encode())

    return Handler
