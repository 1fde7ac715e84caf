"""The local control plane's PKI: who signs what, and what the API server will read."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent_identity.devcluster.pki import CertificateAuthority, ClusterPKI, load_key


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_client_certificate_carries_user_and_groups(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path / "pki").ensure()
    cert_pem, key_pem = pki.client_cert("alice@example.com", ["approvers", "sre-leads"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert _cn(cert) == "alice@example.com"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["approvers", "sre-leads"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    client_ca = x509.load_pem_x509_certificate(pki.client_ca_cert.read_bytes())
    cert.verify_directly_issued_by(client_ca)
    load_key(key_pem)


def test_serving_certificate_has_local_sans_and_is_signed_by_the_serving_ca(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path).ensure()
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()))
    # Two different CAs: a serving certificate is no client credential.
    assert pki.ca_cert.read_bytes() != pki.client_ca_cert.read_bytes()
    # Python's ssl accepts the pair, as Go's TLS will.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))


def test_service_account_key_is_rsa_and_private_files_are_private(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path).ensure()
    assert isinstance(load_key(pki.sa_key.read_bytes()), rsa.RSAPrivateKey)
    for key in (pki.ca_key, pki.client_ca_key, pki.serving_key, pki.sa_key):
        assert key.stat().st_mode & 0o077 == 0, key


def test_existing_pki_is_reused(tmp_path: Path) -> None:
    first = ClusterPKI(tmp_path).ensure().ca_cert.read_bytes()
    assert ClusterPKI(tmp_path).ensure().ca_cert.read_bytes() == first


def test_ca_issues_server_certificates_for_webhooks() -> None:
    ca = CertificateAuthority.create("webhook-ca")
    cert, _ = ca.issue("hook", ip_addresses=["127.0.0.1"], dns_names=["hook.ns.svc"], server=True)
    assert _cn(cert) == "hook"
    cert.verify_directly_issued_by(ca.cert)
    assert ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
