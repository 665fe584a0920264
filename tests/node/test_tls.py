"""DICOM TLS with real dcmtk peers: storescu sending to the node, the node sending to storescp."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner
from fixtures.peers import (
    NodeProcess,
    free_port,
    make_radiograph,
    require_binary,
    storescu,
    toml_document,
)
from fixtures.tls import CertificateSet, Identity, make_test_certificates

from osteonode.cli import app
from osteonode.config import TlsSettings
from osteonode.dicom.scu import SendResult, send_file
from osteonode.dicom.tls import TlsError, client_context, server_context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return make_test_certificates(tmp_path_factory.mktemp("certificates"))


def tls_node(
    node_factory: Callable[..., NodeProcess], certificates: CertificateSet, *, mutual: bool
) -> NodeProcess:
    tls = {
        "enabled": True,
        "certificate": certificates.node.certificate,
        "private_key": certificates.node.private_key,
    }
    if mutual:
        tls["ca_certificates"] = certificates.authority
    return node_factory({"tls": tls}).start()


def client_options(certificates: CertificateSet, identity: Identity | None) -> list[str]:
    """storescu's TLS options: verify the node against the test authority, present ``identity``."""
    presented = (
        ["+tla"]
        if identity is None
        else ["+tls", str(identity.private_key), str(identity.certificate)]
    )
    return [*presented, "+cf", str(certificates.authority)]


def stored(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and "Received Store Response (Success)" in result.stderr


def test_storescu_over_tls_stores_an_image_and_plain_tcp_is_refused(
    node_factory: Callable[..., NodeProcess], certificates: CertificateSet, tmp_path: Path
) -> None:
    node = tls_node(node_factory, certificates, mutual=False)
    image = make_radiograph(tmp_path / "image.dcm")

    secure = storescu(node.port, [image], extra=client_options(certificates, None))
    plain = storescu(node.port, [image], extra=["-to", "5", "-ta", "5"])

    assert stored(secure), secure.stderr
    assert not stored(plain)
    assert len(node.wait_until_routed(1)) == 1
    assert node.wait_for_events("scp_listening")[0]["tls"] is True


def test_mutual_authentication_admits_only_clients_with_a_trusted_certificate(
    node_factory: Callable[..., NodeProcess], certificates: CertificateSet, tmp_path: Path
) -> None:
    node = tls_node(node_factory, certificates, mutual=True)
    image = make_radiograph(tmp_path / "image.dcm")

    anonymous = storescu(node.port, [image], extra=client_options(certificates, None))
    stranger = storescu(
        node.port, [image], extra=client_options(certificates, certificates.stranger)
    )
    trusted = storescu(node.port, [image], extra=client_options(certificates, certificates.peer))

    assert not stored(anonymous) and not stored(stranger)
    assert stored(trusted), trusted.stderr
    failures = node.wait_for_events("tls_handshake_failed", count=2)
    assert all(event["calling_host"] == "127.0.0.1" for event in failures)


def test_a_silent_tls_client_does_not_hold_up_other_senders(
    node_factory: Callable[..., NodeProcess], certificates: CertificateSet, tmp_path: Path
) -> None:
    node = tls_node(node_factory, certificates, mutual=False)
    image = make_radiograph(tmp_path / "image.dcm")
    with socket.create_connection(("127.0.0.1", node.port)) as silent:
        started = time.monotonic()
        secure = storescu(node.port, [image], extra=client_options(certificates, None))
        took = time.monotonic() - started
        silent.settimeout(30)
        closed_by_node = silent.recv(1) == b""

    assert stored(secure), secure.stderr
    assert took < 4.5, f"the sender waited {took:.1f} s behind a silent client"
    assert closed_by_node


@pytest.fixture
def tls_storescp(tmp_path: Path, certificates: CertificateSet) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp speaking TLS with the peer's certificate, requiring a trusted client."""
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [
            require_binary("storescp"),
            "-aet",
            "TLSPACS",
            "-od",
            str(received),
            "+tls",
            str(certificates.peer.private_key),
            str(certificates.peer.certificate),
            "+cf",
            str(certificates.authority),
            "-rc",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.1)
    yield port, received
    process.terminate()
    process.wait(10)


def send_over_tls(film: Path, port: int, settings: TlsSettings) -> SendResult:
    return send_file(
        film,
        host="localhost",
        port=port,
        called_ae_title="TLSPACS",
        calling_ae_title="OSTEONODE",
        timeout_s=10,
        tls=client_context(settings),
    ).result


def test_the_node_sends_to_a_tls_peer_with_mutual_authentication(
    tls_storescp: tuple[int, Path], certificates: CertificateSet, tmp_path: Path
) -> None:
    port, received = tls_storescp
    film = make_radiograph(tmp_path / "film.dcm")
    verified = TlsSettings(enabled=True, ca_certificates=certificates.authority)
    mutual = verified.model_copy(
        update={
            "certificate": certificates.node.certificate,
            "private_key": certificates.node.private_key,
        }
    )
    untrusting = TlsSettings(enabled=True, ca_certificates=certificates.stranger.certificate)

    without_client_certificate = send_over_tls(film, port, verified)
    server_not_trusted = send_over_tls(film, port, untrusting)
    sent = send_over_tls(film, port, mutual)

    assert without_client_certificate is SendResult.TRANSIENT
    assert server_not_trusted is SendResult.TRANSIENT
    assert sent is SendResult.SENT
    assert len(list(received.iterdir())) == 1


def test_unusable_tls_files_are_named_in_the_error(
    certificates: CertificateSet, tmp_path: Path
) -> None:
    with pytest.raises(TlsError, match=r"tls\.certificate: .*missing\.crt does not exist"):
        server_context(
            TlsSettings(
                enabled=True,
                certificate=tmp_path / "missing.crt",
                private_key=certificates.node.private_key,
            )
        )
    with pytest.raises(TlsError, match="not a PEM certificate chain and its matching private key"):
        server_context(
            TlsSettings(
                enabled=True,
                certificate=certificates.node.certificate,
                private_key=certificates.peer.private_key,
            )
        )
    with pytest.raises(
        TlsError, match=r"destinations\.pacs\.tls\.ca_certificates: .* holds no PEM"
    ):
        client_context(
            TlsSettings(enabled=True, ca_certificates=certificates.node.private_key),
            key="destinations.pacs.tls",
        )


def test_echo_checks_a_tls_destination_with_its_certificates(
    tls_storescp: tuple[int, Path], certificates: CertificateSet, tmp_path: Path
) -> None:
    port, _ = tls_storescp
    destination = {
        "ae_title": "TLSPACS", "host": "localhost", "port": port, "timeout_s": 10,
        "tls": {"enabled": True, "ca_certificates": str(certificates.authority)},
    }
    anonymous = tmp_path / "anonymous.toml"
    anonymous.write_text(toml_document({"destinations.pacs": destination}), "utf-8")
    mutual = tmp_path / "mutual.toml"
    mutual.write_text(toml_document({"destinations.pacs": {**destination, "tls": {
        **destination["tls"],
        "certificate": str(certificates.node.certificate),
        "private_key": str(certificates.node.private_key),
    }}}), "utf-8")

    refused = CliRunner().invoke(app, ["echo", "pacs", "--config", str(anonymous)])
    answered = CliRunner().invoke(app, ["echo", "pacs", "--config", str(mutual)])

    assert refused.exit_code == 1 and "C-ECHO failed" in refused.output
    assert answered.exit_code == 0, answered.output
    assert "TLS)" in answered.output and "C-ECHO succeeded" in answered.output
