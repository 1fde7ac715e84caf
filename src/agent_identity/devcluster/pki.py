"""Certificates for the local control plane (built by agent_identity.certs).

Two CAs, as in a real cluster: the serving CA signs the API server's serving
certificate (clients trust it via the kubeconfig), the client CA signs client
certificates (the API server maps CN to the user and O to the groups). EC P-256
keys keep generation instant; the service-account signing key is RSA because
RS256 is what every token consumer expects.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agent_identity import certs
from agent_identity.certs import PrivateKey, cert_pem, key_pem, load_key, write_private

# Re-exported: callers (and tests) take the PEM helpers from here.
__all__ = ["CertificateAuthority", "ClusterPKI", "PrivateKey", "cert_pem", "key_pem", "load_key"]

_VALIDITY = dt.timedelta(days=365)
_CA_VALIDITY = 10 * _VALIDITY


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        return cls(*certs.make_ca(common_name, _CA_VALIDITY))

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CertificateAuthority:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        return cls(cert, load_key(key_file.read_bytes()))

    def save(self, cert_file: Path, key_file: Path) -> None:
        cert_file.write_bytes(cert_pem(self.cert))
        write_private(key_file, key_pem(self.key))

    @property
    def cert_pem(self) -> bytes:
        return cert_pem(self.cert)

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A leaf certificate and its new key. `organizations` become Kubernetes groups."""
        return certs.issue(
            self.cert,
            self.key,
            common_name,
            _VALIDITY,
            organizations=organizations,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            server=server,
            client=client,
        )


# The API server's names: loopback, the node's bridge address (10.244.0.1, where it
# listens when the cluster has a node) and the `kubernetes` Service IP.
SERVING_IPS = ("127.0.0.1", "10.244.0.1", "10.0.0.1")
SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def _has_ip_sans(cert_file: Path, ips: Sequence[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return all(ip in have for ip in ips)


@dataclass(frozen=True)
class ClusterPKI:
    """The files of one cluster's PKI, under `directory`."""

    directory: Path

    @property
    def ca_cert(self) -> Path:  # serving CA: trusted by clients, published as kube-root-ca.crt
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def client_ca_cert(self) -> Path:
        return self.directory / "client-ca.crt"

    @property
    def client_ca_key(self) -> Path:
        return self.directory / "client-ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def kubelet_client_cert(self) -> Path:  # the API server's client cert towards the kubelet
        return self.directory / "apiserver-kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.directory / "apiserver-kubelet-client.key"

    def exists(self) -> bool:
        files = [self.ca_cert, self.ca_key, self.client_ca_cert, self.client_ca_key]
        files += [self.serving_cert, self.serving_key, self.sa_key, self.sa_pub]
        files += [self.kubelet_client_cert, self.kubelet_client_key]
        return all(f.is_file() for f in files) and _has_ip_sans(self.serving_cert, SERVING_IPS)

    def ensure(self) -> ClusterPKI:
        """Generate what is missing; reusing the CAs keeps old kubeconfigs valid."""
        if self.exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.ca_cert.is_file() and self.ca_key.is_file()):
            CertificateAuthority.create("agent-identity-devcluster-ca").save(
                self.ca_cert, self.ca_key
            )
        if not (self.client_ca_cert.is_file() and self.client_ca_key.is_file()):
            CertificateAuthority.create("agent-identity-devcluster-client-ca").save(
                self.client_ca_cert, self.client_ca_key
            )
        serving_ca = CertificateAuthority.load(self.ca_cert, self.ca_key)
        # Reissued when an older PKI lacks an address (the node's bridge came later).
        if not (self.serving_key.is_file() and _has_ip_sans(self.serving_cert, SERVING_IPS)):
            cert, key = serving_ca.issue(
                "kube-apiserver",
                dns_names=SERVING_DNS_NAMES,
                ip_addresses=SERVING_IPS,
                server=True,
            )
            self.serving_cert.write_bytes(cert_pem(cert))
            write_private(self.serving_key, key_pem(key))
        if not (self.kubelet_client_cert.is_file() and self.kubelet_client_key.is_file()):
            # system:masters: the kubelet's webhook authorizer allows logs/exec/port-forward.
            kcert, kkey = self.client_ca().issue(
                "kube-apiserver-kubelet-client", organizations=["system:masters"], client=True
            )
            self.kubelet_client_cert.write_bytes(cert_pem(kcert))
            write_private(self.kubelet_client_key, key_pem(kkey))
        if self.sa_key.is_file() and self.sa_pub.is_file():
            return self
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(self.sa_key, key_pem(sa))
        self.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return self

    def client_ca(self) -> CertificateAuthority:
        return CertificateAuthority.load(self.client_ca_cert, self.client_ca_key)

    def client_cert(self, user: str, groups: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """PEM certificate and key for `user` in `groups`, signed by the client CA."""
        cert, key = self.client_ca().issue(user, organizations=groups, client=True)
        return cert_pem(cert), key_pem(key)
