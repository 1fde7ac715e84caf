"""The self-managed serving certificate: pure helpers (certificates, rotation, Lease, caBundle)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from agent_identity.admission import selfcert as sc

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
NAMES = sc.service_dns_names("agent-identity-admission", "agent-identity-system")


@pytest.fixture(scope="module")
def material() -> sc.Material:
    return sc.next_material(None, "missing", NAMES, NOW)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_service_dns_names() -> None:
    assert NAMES[0] == "agent-identity-admission.agent-identity-system.svc"
    assert "agent-identity-admission.agent-identity-system.svc.cluster.local" in NAMES


def test_new_material_is_a_ca_and_a_serving_cert_for_the_names(material: sc.Material) -> None:
    ca = _cert(material.ca_bundle)
    cert = _cert(material.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == set(NAMES)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=sc.SERVING_DAYS)
    assert sc.rotation_reason(material, NAMES, NOW) is None


def test_material_serves_tls(material: sc.Material, tmp_path: Path) -> None:
    # The pair loads into an SSLContext and a client trusting ca.crt verifies it by name.
    (tmp_path / "tls.crt").write_bytes(material.cert)
    (tmp_path / "tls.key").write_bytes(material.key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cadata=material.ca_bundle.decode())
    a, b = ssl.MemoryBIO(), ssl.MemoryBIO()
    c, d = ssl.MemoryBIO(), ssl.MemoryBIO()
    srv = server.wrap_bio(a, b, server_side=True)
    cli = client.wrap_bio(c, d, server_hostname=NAMES[0])

    def pump() -> None:
        a.write(d.read())
        c.write(b.read())

    for _ in range(10):
        for side in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        pump()
    assert cli.getpeercert()["subject"][0][0][1] == NAMES[0]


def test_secret_data_round_trip(material: sc.Material) -> None:
    data = material.to_secret_data()
    assert set(data) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert sc.Material.from_secret_data(data) == material
    assert sc.Material.from_secret_data(None) is None
    assert sc.Material.from_secret_data({"tls.crt": "x"}) is None
    assert sc.Material.from_secret_data({**data, "tls.key": "!!notbase64"}) is None


def test_rotation_reasons(material: sc.Material) -> None:
    assert sc.rotation_reason(None, NAMES, NOW) == "missing"
    garbage = sc.Material(b"nope", material.ca_key, material.cert, material.key)
    assert sc.rotation_reason(garbage, NAMES, NOW) == "invalid"
    # The serving certificate is renewed 30 days before it ends...
    later = NOW + dt.timedelta(days=sc.SERVING_DAYS) - sc.SERVING_RENEW
    assert sc.rotation_reason(material, NAMES, later - dt.timedelta(seconds=1)) is None
    assert sc.rotation_reason(material, NAMES, later) == "serving-expiring"
    # ...the CA a year before it ends.
    ca_end = NOW + dt.timedelta(days=sc.CA_DAYS) - sc.CA_RENEW
    assert sc.rotation_reason(material, NAMES, ca_end) == "ca-expiring"
    assert sc.rotation_reason(material, [*NAMES, "extra.example"], NOW) == "names-changed"
    other = sc.next_material(None, "missing", NAMES, NOW)
    foreign = sc.Material(material.ca_bundle, material.ca_key, other.cert, other.key)
    assert sc.rotation_reason(foreign, NAMES, NOW) == "not-signed-by-ca"
    mismatched = sc.Material(material.ca_bundle, other.ca_key, material.cert, material.key)
    assert sc.rotation_reason(mismatched, NAMES, NOW) == "invalid"


def test_serving_rotation_keeps_the_ca(material: sc.Material) -> None:
    later = NOW + dt.timedelta(days=70)
    new = sc.next_material(material, "serving-expiring", NAMES, later)
    assert new.ca_bundle == material.ca_bundle and new.ca_key == material.ca_key
    assert new.cert != material.cert
    _cert(new.cert).verify_directly_issued_by(_cert(material.ca_bundle))
    assert sc.rotation_reason(new, NAMES, later) is None


def test_ca_rotation_trusts_old_and_new(material: sc.Material) -> None:
    when = NOW + dt.timedelta(days=sc.CA_DAYS) - sc.CA_RENEW
    new = sc.next_material(material, "ca-expiring", NAMES, when)
    bundle = sc.split_bundle(new.ca_bundle)
    assert len(bundle) == 2
    assert bundle[1] == _cert(material.ca_bundle)  # the old CA stays trusted
    _cert(new.cert).verify_directly_issued_by(bundle[0])
    assert sc.rotation_reason(new, NAMES, when) is None
    # Once the old CA has expired, the next rotation drops it.
    much_later = NOW + dt.timedelta(days=sc.CA_DAYS + 1)
    newer = sc.next_material(new, "serving-expiring", NAMES, much_later)
    assert len(sc.split_bundle(newer.ca_bundle)) == 1


def test_lease_actions() -> None:
    assert sc.lease_action(None, "a", NOW) == "acquire"
    held = sc.lease_spec(None, "b", NOW, 30)
    assert held["holderIdentity"] == "b" and held["leaseTransitions"] == 0
    assert sc.lease_action(held, "b", NOW) == "renew"
    assert sc.lease_action(held, "a", NOW + dt.timedelta(seconds=29)) == "wait"
    assert sc.lease_action(held, "a", NOW + dt.timedelta(seconds=30)) == "acquire"
    taken = sc.lease_spec(held, "a", NOW + dt.timedelta(seconds=31), 30)
    assert taken["holderIdentity"] == "a" and taken["leaseTransitions"] == 1
    renewed = sc.lease_spec(taken, "a", NOW + dt.timedelta(seconds=40), 30)
    assert renewed["acquireTime"] == taken["acquireTime"]
    assert renewed["renewTime"] == "2026-12-03T12:00:40.000000Z"
    assert sc.parse_time(renewed["renewTime"]) == NOW + dt.timedelta(seconds=40)


def test_lease_is_exclusive_under_contention() -> None:
    # Replicas deciding on the same observed Lease: once one holds it, nobody else acquires
    # before it expires, at any moment.
    held = sc.lease_spec(None, "r0", NOW, 30)
    for second in range(30):
        t = NOW + dt.timedelta(seconds=second)
        assert [sc.lease_action(held, f"r{i}", t) for i in range(1, 4)] == ["wait"] * 3


def test_ca_bundle_patch(material: sc.Material) -> None:
    want = base64.b64encode(material.ca_bundle).decode()
    config = {
        "metadata": {"name": "agent-identity", "resourceVersion": "42"},
        "webhooks": [
            {"name": "a.agentidentity.io", "clientConfig": {"service": {"name": "s"}}},
            {"name": "b.agentidentity.io", "clientConfig": {"caBundle": want}},
        ],
    }
    ops = sc.ca_bundle_patch(config, material.ca_bundle)
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": want},
    ]
    config["webhooks"][0]["clientConfig"]["caBundle"] = want
    assert sc.ca_bundle_patch(config, material.ca_bundle) == []


def test_make_serving_needs_names(material: sc.Material) -> None:
    with pytest.raises(ValueError, match="DNS name"):
        sc.make_serving(material.ca_bundle, material.ca_key, [], NOW)


def test_make_serving_for_names_longer_than_a_common_name(material: sc.Material) -> None:
    # The qualified names of a Service in a 63-character namespace are longer than X.509's
    # 64-character CN limit; the SANs carry them all and the CN is cut to fit.
    long_names = sc.service_dns_names("agent-identity-admission", "n" * 63)[:3]
    assert all(len(n) > 64 for n in long_names)
    pem, _key = sc.make_serving(material.ca_bundle, material.ca_key, long_names, NOW)
    cert = _cert(pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(long_names)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == long_names[0][:64]
    # With the short Service name among them, the first name that fits is the CN.
    names = sc.service_dns_names("agent-identity-admission", "n" * 63)
    pem, _key = sc.make_serving(material.ca_bundle, material.ca_key, names, NOW)
    cn = _cert(pem).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "agent-identity-admission"
