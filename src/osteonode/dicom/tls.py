"""DICOM TLS (PS3.15 Annex B): the :class:`ssl.SSLContext` of the node's port and of a destination.

Both sides are built from one settings model, :class:`osteonode.config.TlsSettings`, so the receiver
(``[tls]``) and each destination (``[destinations.<name>.tls]``) are configured the same way. The
contexts follow the BCP 195 profile that dcmtk also defaults to: TLS 1.2 or newer, the standard
library's default cipher selection, certificates verified against the configured authorities.

A file that is missing, unreadable or not PEM of the right kind raises :class:`TlsError` naming the
key and the file, so ``osteonode config check`` and start-up say which setting to fix.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from osteonode.config import TlsSettings, TlsVersion

__all__ = ["TlsError", "client_context", "server_context"]

_MINIMUM_VERSIONS = {
    TlsVersion.TLS_1_2: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS_1_3: ssl.TLSVersion.TLSv1_3,
}


class TlsError(ValueError):
    """TLS settings that cannot be used; the message names the key and the file."""


def server_context(settings: TlsSettings, *, key: str = "tls") -> ssl.SSLContext:
    """The context of a port that accepts DICOM TLS.

    Parameters
    ----------
    settings
        The node's ``[tls]`` settings; ``certificate`` and ``private_key`` are required.
        With ``ca_certificates`` every client must present a certificate that chains to them
        (mutual authentication); without, clients need no certificate.
    key
        The settings' dotted key, for error messages.

    Returns
    -------
    ssl.SSLContext

    Raises
    ------
    TlsError
        If a file is missing or unusable, or no certificate is configured.
    """
    _check_settings(settings)
    if settings.certificate is None or settings.private_key is None:
        raise TlsError(f"{key}.certificate: receiving with TLS needs a certificate and private_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _secure(context, settings)
    _load_identity(context, settings, key)
    if settings.ca_certificates is not None:
        _load_authorities(context, settings.ca_certificates, key)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_context(settings: TlsSettings, *, key: str = "tls") -> ssl.SSLContext:
    """The context of an association to a destination that speaks DICOM TLS.

    Parameters
    ----------
    settings
        The destination's ``tls`` settings. The destination's certificate is always verified:
        against ``ca_certificates``, or the system's trust store when unset; ``check_hostname``
        also requires it to name the destination's host. ``certificate`` and ``private_key``,
        when given, are presented for mutual authentication.
    key
        The settings' dotted key, for error messages.

    Returns
    -------
    ssl.SSLContext

    Raises
    ------
    TlsError
        If a file is missing or unusable.
    """
    _check_settings(settings)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _secure(context, settings)
    context.check_hostname = settings.check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.ca_certificates is not None:
        _load_authorities(context, settings.ca_certificates, key)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.certificate is not None:
        _load_identity(context, settings, key)
    return context


def _check_settings(settings: TlsSettings) -> None:
    if not isinstance(settings, TlsSettings):
        raise TypeError(f"settings must be a TlsSettings, not {type(settings).__name__}")


def _secure(context: ssl.SSLContext, settings: TlsSettings) -> None:
    context.minimum_version = _MINIMUM_VERSIONS[settings.minimum_version]
    # No renegotiation and no compression (BCP 195 section 3.3).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _readable(path: Path, key: str) -> None:
    if not path.is_file():
        raise TlsError(f"{key}: {path} does not exist or is not a file")
    try:
        path.open("rb").close()
    except OSError as error:
        raise TlsError(f"{key}: cannot read {path}: {error.strerror}") from None


def _load_identity(context: ssl.SSLContext, settings: TlsSettings, key: str) -> None:
    assert settings.certificate is not None and settings.private_key is not None
    _readable(settings.certificate, f"{key}.certificate")
    _readable(settings.private_key, f"{key}.private_key")
    try:
        context.load_cert_chain(settings.certificate, settings.private_key)
    except ssl.SSLError as error:
        raise TlsError(
            f"{key}.certificate: {settings.certificate} and {settings.private_key} are not a PEM "
            f"certificate chain and its matching private key ({error.reason or error})"
        ) from None


def _load_authorities(context: ssl.SSLContext, path: Path, key: str) -> None:
    _readable(path, f"{key}.ca_certificates")
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as error:
        raise TlsError(
            f"{key}.ca_certificates: {path} holds no PEM certificate ({error.reason or error})"
        ) from None
