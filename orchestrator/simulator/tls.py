"""A private CA and a loopback server certificate, so clients are tested with verification on."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trustme

CA_FILE: Final = "fleet-ca.pem"
_CA_KEY_FILE: Final = "fleet-ca.key"
_CERT_FILE: Final = "server.pem"
_KEY_FILE: Final = "server.key"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_cert: Path  # what clients trust (an inventory's `ca_bundle`)
    server_cert: Path  # server certificate followed by the chain
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))


def ensure_tls_files(directory: Path) -> TlsFiles:
    """Create the CA in `directory` unless it is already there, then issue a fresh server certificate.

    Reusing the CA keeps a user's trust settings valid across simulator restarts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / CA_FILE, directory / _CA_KEY_FILE
    if ca_cert.exists() and ca_key.exists():
        ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = trustme.CA(organization_name="ArcGIS fleet simulator")
        ca.cert_pem.write_to_path(str(ca_cert))
        _write_private(ca_key, ca.private_key_pem.bytes())
    leaf = ca.issue_cert("127.0.0.1", "localhost", "::1")
    server_cert, server_key = directory / _CERT_FILE, directory / _KEY_FILE
    server_cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    _write_private(server_key, leaf.private_key_pem.bytes())
    return TlsFiles(ca_cert, server_cert, server_key)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
