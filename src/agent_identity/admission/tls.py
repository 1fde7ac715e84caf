"""Development certificates: a throwaway CA and a serving certificate for the webhook.

In a cluster the serving certificate comes from cert-manager (files) or from the
admission process itself (``--tls-secret``, agent_identity.admission.selfcert);
``agent-identity admission --dev`` makes its own with this module and hands the CA
to the API server as the webhook configurations' caBundle. The builders are
agent_identity.certs.
"""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent_identity import certs


@dataclass(frozen=True)
class ServingCert:
    ca_pem: bytes
    cert_file: Path
    key_file: Path

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_serving_cert(
    directory: Path,
    hosts: list[str],
    *,
    days: int = 30,
    now: dt.datetime | None = None,
) -> ServingCert:
    """Write ca.crt, tls.crt and tls.key to ``directory`` for ``hosts`` (IPs or DNS names)."""
    directory.mkdir(parents=True, exist_ok=True)
    validity = dt.timedelta(days=days)
    ca, ca_key = certs.make_ca("agent-identity-admission-ca", validity, now=now)
    cert, key = certs.issue(ca, ca_key, hosts[0], validity, hosts=hosts, server=True, now=now)
    ca_pem = certs.cert_pem(ca)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    (directory / "ca.crt").write_bytes(ca_pem)
    cert_file.write_bytes(certs.cert_pem(cert))
    certs.write_private(key_file, certs.key_pem(key))
    return ServingCert(ca_pem, cert_file, key_file)


class ReloadableServingContext:
    """A server SSLContext whose certificate is replaced in place after a rotation.

    ``load_cert_chain`` on a live context changes what the *next* handshakes present;
    connections already open keep theirs. The pair goes through files in ``directory``
    (the ssl module loads only from files): a private temp dir, the key 0600.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.loads = 0

    def load(self, cert_pem: bytes, key_pem: bytes) -> None:
        cert_file, key_file = self.directory / "tls.crt", self.directory / "tls.key"
        cert_file.write_bytes(cert_pem)
        certs.write_private(key_file, key_pem)
        self.context.load_cert_chain(cert_file, key_file)
        self.loads += 1


@dataclass
class CertificateFiles:
    """A serving pair on disk that someone else renews in place (cert-manager writes the
    Secret, the kubelet updates the mounted files): ``reload_if_changed`` loads a new pair
    into the live context, so the next handshakes present it; no restart needed."""

    cert_file: Path
    key_file: Path
    context: ssl.SSLContext
    _stamp: tuple[int, int, int, int] | None = None

    @classmethod
    def open(cls, cert_file: Path, key_file: Path) -> CertificateFiles:
        files = cls(cert_file, key_file, ServingCert(b"", cert_file, key_file).ssl_context())
        files._stamp = files._read_stamp()
        return files

    def _read_stamp(self) -> tuple[int, int, int, int] | None:
        try:
            c, k = self.cert_file.stat(), self.key_file.stat()
        except OSError:
            return None
        return (c.st_mtime_ns, c.st_size, k.st_mtime_ns, k.st_size)

    def reload_if_changed(self) -> bool:
        """True when a changed pair was loaded. A half-written pair (cert and key not yet
        matching) raises ssl.SSLError, leaves the live context as it was, and is retried
        on the next call."""
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return False
        # One consistent copy of the pair, checked in a scratch context first: a failed
        # load_cert_chain would leave the live context with a certificate but no key.
        with tempfile.TemporaryDirectory(prefix="agent-identity-tls-") as tmp:
            cert_copy, key_copy = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_copy.write_bytes(self.cert_file.read_bytes())
            certs.write_private(key_copy, self.key_file.read_bytes())
            ServingCert(b"", cert_copy, key_copy).ssl_context()
            self.context.load_cert_chain(cert_copy, key_copy)
        self._stamp = stamp
        return True
