"""A local Orthanc as the PACS: the Debian binary with its own configuration, storage, log and Lua.

The demo and the integration tests both run Orthanc this way. It listens on loopback only, on free
ports chosen when the object is made (kept across :meth:`Orthanc.stop` / :meth:`Orthanc.start`, so a
restarted Orthanc is the same PACS with the same storage). Optionally a Lua ``OnStoredInstance``
script auto-forwards what it stores to the node, as a hospital PACS forwards new radiographs to an
analysis node; the node's own results (Structured Reports and Secondary Captures) are never
forwarded back.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["Orthanc", "OrthancError", "OrthancModality", "dicomweb_installed", "free_port"]

#: SOP Class UID prefixes of what the node produces: every SR storage class, Secondary Capture.
_NODE_OUTPUT_CLASS_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.7")

_FORWARD_SCRIPT = """-- Written by osteonode: forward stored images to the analysis node, never its own results.
local NODE_OUTPUT_CLASSES = {{{prefixes}}}

function OnStoredInstance(instanceId, tags, metadata, origin)
  local sopClass = tags['SOPClassUID'] or ''
  for _, prefix in ipairs(NODE_OUTPUT_CLASSES) do
    if string.sub(sopClass, 1, string.len(prefix)) == prefix then
      return
    end
  end
  SendToModality(instanceId, '{modality}')
end
"""


class OrthancError(RuntimeError):
    """Orthanc is not installed, did not start, or its REST API answered an error."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class OrthancModality:
    """A DICOM peer known to Orthanc (an entry of its ``DicomModalities``).

    Parameters
    ----------
    name
        Orthanc's symbolic name for it (used by ``SendToModality`` and the REST API).
    ae_title, host, port
        Its DICOM address.
    """

    name: str
    ae_title: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(
                f"modality name must be letters, digits, '-' or '_', got {self.name!r}"
            )
        if not 1 <= len(self.ae_title) <= 16:
            raise ValueError(f"AE title must have 1 to 16 characters, got {self.ae_title!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be 1 to 65535, got {self.port}")

    def as_json(self) -> dict[str, Any]:
        """The modality as Orthanc's REST API and configuration take it."""
        return {"AET": self.ae_title, "Host": self.host, "Port": self.port}


def _find_binary() -> str:
    path = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None
    )
    if path is None:
        raise OrthancError(
            "Orthanc is not installed (Debian package 'orthanc'; `make install` adds it)"
        )
    return path


#: Where Debian's orthanc-dicomweb package puts the plugin.
_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def dicomweb_installed() -> bool:
    """Whether Orthanc's DICOMweb plugin is installed (``Orthanc(dicomweb=True)`` works)."""
    return _DICOMWEB_PLUGIN.is_file()


def _dicomweb_plugin() -> Path:
    if not dicomweb_installed():
        raise OrthancError(
            f"the Orthanc DICOMweb plugin is not installed ({_DICOMWEB_PLUGIN}; Debian package"
            " 'orthanc-dicomweb', `make install` adds it)"
        )
    return _DICOMWEB_PLUGIN


class Orthanc:
    """One Orthanc process on loopback.

    Parameters
    ----------
    workdir
        Holds the configuration, Lua script, storage and log.
    ae_title
        Orthanc's own AE title.
    forward_to
        Forward every stored image (not SR or Secondary Capture) to this modality by C-STORE.
    modalities
        Further peers Orthanc knows.
    accept_unknown_callers
        False: refuse associations from AE titles that are not among the known modalities
        (``DicomAlwaysAllowStore`` and ``DicomAlwaysAllowEcho`` off), which Orthanc answers with
        A-ASSOCIATE-RJ rejected-permanent, calling AE title not recognised.
    dicomweb
        Load the DICOMweb plugin (Debian ``orthanc-dicomweb``) under ``/dicom-web/``, for web
        viewers such as OHIF (:class:`osteonode.peers.ohif.OhifViewer`).

    Raises
    ------
    OrthancError
        When `dicomweb` is asked for and the plugin is not installed.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        ae_title: str = "ORTHANC",
        forward_to: OrthancModality | None = None,
        modalities: Sequence[OrthancModality] = (),
        accept_unknown_callers: bool = True,
        dicomweb: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.ae_title = ae_title
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.log_path = self.workdir / "orthanc.log"
        self.config_path = self.workdir / "orthanc.json"
        known = [*modalities, *([forward_to] if forward_to is not None else [])]
        names = [modality.name for modality in known]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        scripts = []
        if forward_to is not None:
            script = self.workdir / "forward.lua"
            prefixes = ", ".join(f"'{prefix}'" for prefix in _NODE_OUTPUT_CLASS_PREFIXES)
            script.write_text(
                _FORWARD_SCRIPT.format(prefixes=prefixes, modality=forward_to.name), "utf-8"
            )
            scripts.append(str(script))
        configuration = {
            "Name": f"osteonode-{ae_title.lower()}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ae_title,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(_dicomweb_plugin())] if dicomweb else [],
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
            "LuaScripts": scripts,
            "DicomAlwaysAllowStore": accept_unknown_callers,
            "DicomAlwaysAllowEcho": accept_unknown_callers,
            "DicomModalities": {modality.name: modality.as_json() for modality in known},
            # Close each forwarding association at once rather than keep it open for reuse, so the
            # node is not kept waiting for it when it shuts down.
            "DicomAssociationCloseDelay": 0,
        }
        self.config_path.write_text(json.dumps(configuration, indent=2), "utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Orthanc(ae_title={self.ae_title!r}, dicom_port={self.dicom_port}, http_port={self.http_port})"

    @property
    def url(self) -> str:
        """The REST API's base address."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def is_running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def explorer_url(self, study_id: str | None = None) -> str:
        """The Orthanc Explorer address, of one study when its Orthanc ID is given."""
        page = f"{self.url}/app/explorer.html"
        return page if study_id is None else f"{page}#study?uuid={study_id}"

    def start(self, timeout_s: float = 30.0) -> Self:
        """Start Orthanc and wait until its REST API answers.

        Raises
        ------
        OrthancError
            If Orthanc is not installed, exits, or does not answer within ``timeout_s``.
        """
        if self.is_running:
            raise OrthancError("Orthanc is already running")
        binary = _find_binary()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [binary, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise OrthancError(f"Orthanc exited at start; see {self.log_path}")
            try:
                self.get("/system")
                return self
            except (OSError, OrthancError):
                time.sleep(0.05)
        self.stop()
        raise OrthancError(f"Orthanc did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop Orthanc (its storage stays for the next :meth:`start`)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # REST API ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None, content_type: str) -> Any:
        payload = self._fetch(method, path, body, content_type)
        return json.loads(payload) if payload else None

    def _fetch(self, method: str, path: str, body: bytes | None, content_type: str) -> bytes:
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            raise OrthancError(
                f"{method} {path}: HTTP {error.code} {error.read()[:500]!r}"
            ) from None

    def get(self, path: str) -> Any:
        """GET a REST resource and decode its JSON."""
        return self._request("GET", path, None, "application/json")

    def post_json(self, path: str, body: Any) -> Any:
        """POST JSON to a REST resource and decode the answer."""
        return self._request("POST", path, json.dumps(body).encode(), "application/json")

    def post_instance(self, path: Path) -> dict[str, Any]:
        """Store a DICOM file in Orthanc (``POST /instances``), as a modality or user would."""
        return dict(
            self._request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
        )

    def add_modality(self, modality: OrthancModality) -> None:
        """Make a peer known to the running Orthanc (``PUT /modalities/{name}``)."""
        body = json.dumps(modality.as_json()).encode()
        self._request("PUT", f"/modalities/{modality.name}", body, "application/json")

    def _lookup(self, uid: str, level: str) -> str | None:
        """Orthanc's ID of the `level` ("Study", "Instance") resource with this UID, or None."""
        for match in self._request("POST", "/tools/lookup", uid.encode(), "text/plain"):
            if match.get("Type") == level:
                return str(match["ID"])
        return None

    def study_id(self, study_instance_uid: str) -> str | None:
        """Orthanc's ID of the study with this Study Instance UID, or None if it has none."""
        return self._lookup(study_instance_uid, "Study")

    def instance_file(self, sop_instance_uid: str) -> bytes:
        """The DICOM file Orthanc stores for this SOP Instance UID, as it was received.

        Raises
        ------
        OrthancError
            When Orthanc holds no such instance.
        """
        instance = self._lookup(sop_instance_uid, "Instance")
        if instance is None:
            raise OrthancError(f"Orthanc holds no instance {sop_instance_uid}")
        return self._fetch("GET", f"/instances/{instance}/file", None, "application/dicom")

    def study_instances(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """The tags (Orthanc's simplified form, without pixel data) of every instance of a study."""
        study = self.study_id(study_instance_uid)
        if study is None:
            return []
        return [
            self.get(f"/instances/{instance['ID']}/simplified-tags")
            for instance in self.get(f"/studies/{study}/instances")
        ]
