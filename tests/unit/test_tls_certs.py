"""agent_identity.certs (the one certificate builder) and the admission's TLS helpers on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent_identity import certs
from agent_identity.admission.tls import (
    CertificateFiles,
    ReloadableServingContext,
    make_serving_cert,
)

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> x509.Certificate:
    """A TLS handshake in memory; the certificate the client saw."""
    a, b, c, d = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(a, b, server_side=True)
    cli = client.wrap_bio(c, d, server_hostname=hostname)
    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        a.write(d.read())
        c.write(b.read())
    der = cli.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_ca_and_leaf_shapes() -> None:
    ca, ca_key = certs.make_ca("test-ca", dt.timedelta(days=10), now=NOW)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_before_utc == NOW - certs.BACKDATE
    leaf, _ = certs.issue(
        ca,
        ca_key,
        "svc",
        dt.timedelta(days=3),
        organizations=["group-a"],
        hosts=["10.0.0.1", "svc.ns.svc"],
        server=True,
        client=True,
        now=NOW,
    )
    leaf.verify_directly_issued_by(ca)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # hosts are sorted by their form: an IP is an IP SAN (Go's TLS matches IPs only there).
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    orgs = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["group-a"]
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(days=3)


def test_a_leaf_never_outlives_its_ca() -> None:
    ca, ca_key = certs.make_ca("short-ca", dt.timedelta(days=1), now=NOW)
    leaf, _ = certs.issue(ca, ca_key, "x", dt.timedelta(days=90), dns_names=["x"], now=NOW)
    assert leaf.not_valid_after_utc == ca.not_valid_after_utc


def test_pem_round_trip_and_private_files(tmp_path: Path) -> None:
    ca, key = certs.make_ca("round-trip", dt.timedelta(days=1))
    assert certs.load_cert(certs.cert_pem(ca)) == ca
    assert certs.load_key(certs.key_pem(key)).public_key() == key.public_key()
    path = tmp_path / "k.pem"
    certs.write_private(path, certs.key_pem(key))
    assert path.stat().st_mode & 0o777 == 0o600


def test_dev_serving_cert_serves_tls(tmp_path: Path) -> None:
    cert = make_serving_cert(tmp_path, ["127.0.0.1", "localhost"])
    assert (tmp_path / "tls.key").stat().st_mode & 0o077 == 0
    client = ssl.create_default_context(cadata=cert.ca_pem.decode())
    seen = _handshake(cert.ssl_context(), client, "localhost")
    assert seen == x509.load_pem_x509_certificate(cert.cert_file.read_bytes())


def test_reloadable_context_serves_the_latest_pair(tmp_path: Path) -> None:
    ca, ca_key = certs.make_ca("reload-ca", dt.timedelta(days=1))
    client = ssl.create_default_context(cadata=certs.cert_pem(ca).decode())
    reloader = ReloadableServingContext(tmp_path / "tls")
    served = []
    for _ in range(2):
        leaf, key = certs.issue(
            ca, ca_key, "hook", dt.timedelta(hours=1), dns_names=["hook.ns.svc"], server=True
        )
        reloader.load(certs.cert_pem(leaf), certs.key_pem(key))
        served.append(_handshake(reloader.context, client, "hook.ns.svc"))
        assert served[-1] == leaf  # the same context object now presents the new pair
    assert reloader.loads == 2 and served[0] != served[1]
    assert (tmp_path / "tls" / "tls.key").stat().st_mode & 0o077 == 0


def test_certificate_files_renewed_in_place_are_served_without_a_restart(tmp_path: Path) -> None:
    # cert-manager mode: the kubelet updates the mounted Secret's files after a renewal.
    ca, ca_key = certs.make_ca("cm-ca", dt.timedelta(days=1))
    client = ssl.create_default_context(cadata=certs.cert_pem(ca).decode())
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"

    def write_pair() -> x509.Certificate:
        leaf, key = certs.issue(
            ca, ca_key, "hook", dt.timedelta(hours=1), dns_names=["hook.ns.svc"], server=True
        )
        cert_file.write_bytes(certs.cert_pem(leaf))
        certs.write_private(key_file, certs.key_pem(key))
        return leaf

    first = write_pair()
    files = CertificateFiles.open(cert_file, key_file)
    assert _handshake(files.context, client, "hook.ns.svc") == first
    assert files.reload_if_changed() is False  # nothing changed
    renewed = write_pair()
    assert files.reload_if_changed() is True
    assert _handshake(files.context, client, "hook.ns.svc") == renewed
    assert files.reload_if_changed() is False
    # A half-written renewal (a new cert, the old key) is refused and retried later.
    other, _ = certs.issue(ca, ca_key, "x", dt.timedelta(hours=1), dns_names=["x"], server=True)
    cert_file.write_bytes(certs.cert_pem(other))
    with contextlib.suppress(ssl.SSLError):
        files.reload_if_changed()
    assert _handshake(files.context, client, "hook.ns.svc") == renewed  # still the good pair
