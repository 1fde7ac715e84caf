"""The admission webhook's serving certificate, made and rotated by the admission process.

When cert-manager is not installed (`certManager.enabled: false` in the chart), the
admission replicas keep their own certificate, as Kyverno and Gatekeeper do:

- one Secret (``tls.crt``, ``tls.key``, ``ca.crt``, ``ca.key``) holds a private CA and
  the serving certificate it signed for the Service's DNS names;
- one replica at a time writes it, the holder of a ``coordination.k8s.io`` Lease, so
  replicas never fight (writes also carry the resourceVersion they read: a lost race is a
  409, never a silent overwrite);
- the holder keeps the ``caBundle`` of our Validating/MutatingWebhookConfigurations equal
  to ``ca.crt``;
- every replica loads the certificate from the Secret and reloads it after a rotation
  (``on_certificate``).

Rotation: the serving certificate lives ``SERVING_DAYS`` and is renewed ``SERVING_RENEW``
before it ends; the CA lives ``CA_DAYS`` and is replaced ``CA_RENEW`` before it ends. While
a CA is replaced, ``ca.crt`` (and so every caBundle) holds the new CA *and* the old one,
and the caBundle is patched *before* the Secret changes, so the API server trusts the new
serving certificate before any replica serves it, and the old one until it is gone.

The functions above ``run_certificate_manager`` are pure (no I/O) and unit-tested.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent_identity import certs

log = logging.getLogger(__name__)

CA_DAYS = 5 * 365
CA_RENEW = dt.timedelta(days=365)
SERVING_DAYS = 90
SERVING_RENEW = dt.timedelta(days=30)
LEASE_SECONDS = 30
CA_COMMON_NAME = "agent-identity-admission-ca"

KEY_CERT = "tls.crt"
KEY_KEY = "tls.key"
KEY_CA = "ca.crt"
KEY_CA_KEY = "ca.key"

# on_certificate(cert_pem, key_pem, ca_bundle_pem): load this into the serving SSLContext.
CertificateCallback = Callable[[bytes, bytes, bytes], None]


@dataclass(frozen=True)
class Material:
    """What the Secret holds: a CA bundle (current CA first), its key, the serving pair."""

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes

    def to_secret_data(self) -> dict[str, str]:
        raw = {
            KEY_CA: self.ca_bundle,
            KEY_CA_KEY: self.ca_key,
            KEY_CERT: self.cert,
            KEY_KEY: self.key,
        }
        return {k: base64.b64encode(v).decode() for k, v in raw.items()}

    @classmethod
    def from_secret_data(cls, data: dict[str, str] | None) -> Material | None:
        """The material of a Secret's ``data``; None when a key is missing or not base64."""
        if not data:
            return None
        try:
            raw = {
                k: base64.b64decode(data[k], validate=True)
                for k in (KEY_CA, KEY_CA_KEY, KEY_CERT, KEY_KEY)
            }
        except (KeyError, ValueError):
            return None
        return cls(raw[KEY_CA], raw[KEY_CA_KEY], raw[KEY_CERT], raw[KEY_KEY])


# --- pure: certificates (built by agent_identity.certs) ---------------------------------


def make_ca(now: dt.datetime, days: int = CA_DAYS) -> tuple[bytes, bytes]:
    """A new self-signed CA: (certificate PEM, key PEM)."""
    # A serial in the subject tells successive CAs apart in a bundle.
    subject = certs.name(CA_COMMON_NAME, serial_number=str(int(now.timestamp())))
    cert, key = certs.make_ca(subject, dt.timedelta(days=days), now=now)
    return certs.cert_pem(cert), certs.key_pem(key)


def make_serving(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: Sequence[str],
    now: dt.datetime,
    days: int = SERVING_DAYS,
) -> tuple[bytes, bytes]:
    """A serving certificate for ``dns_names`` signed by the CA: (certificate PEM, key PEM)."""
    if not dns_names:
        raise ValueError("a serving certificate needs at least one DNS name")
    ca_key = certs.load_key(ca_key_pem)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    # X.509 caps the CN at 64 characters, and a Service name in a long namespace is
    # longer; clients verify the SANs, so the CN is only a label: the first name that fits.
    common_name = next((d for d in dns_names if len(d) <= 64), dns_names[0][:64])
    cert, key = certs.issue(
        certs.load_cert(ca_cert_pem),
        ca_key,
        common_name,
        dt.timedelta(days=days),
        dns_names=dns_names,
        server=True,
        now=now,
    )
    return certs.cert_pem(cert), certs.key_pem(key)


def split_bundle(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle) if bundle.strip() else []


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    pub = ca.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def rotation_reason(
    material: Material | None,
    dns_names: Sequence[str],
    now: dt.datetime,
    *,
    ca_renew: dt.timedelta = CA_RENEW,
    serving_renew: dt.timedelta = SERVING_RENEW,
) -> str | None:
    """Why the Secret's material must be (re)made, or None when it is good as it is.

    Returns "missing", "invalid", "ca-expiring" (make a new CA, keep the old one in the
    bundle), or "serving-expiring" / "names-changed" / "not-signed-by-ca" (new serving
    certificate from the current CA).
    """
    if material is None:
        return "missing"
    try:
        cas = split_bundle(material.ca_bundle)
        cert = x509.load_pem_x509_certificate(material.cert)
        ca_key = serialization.load_pem_private_key(material.ca_key, password=None)
        serialization.load_pem_private_key(material.key, password=None)
    except ValueError:
        return "invalid"
    if not cas:
        return "invalid"
    current = cas[0]
    if current.public_key().public_numbers() != ca_key.public_key().public_numbers():  # type: ignore[union-attr]
        return "invalid"
    if current.not_valid_after_utc - ca_renew <= now:
        return "ca-expiring"
    if not _signed_by(cert, current):
        return "not-signed-by-ca"
    if cert.not_valid_after_utc - serving_renew <= now:
        return "serving-expiring"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = set(sans.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = set()
    if names != set(dns_names):
        return "names-changed"
    return None


def next_material(
    material: Material | None,
    reason: str,
    dns_names: Sequence[str],
    now: dt.datetime,
) -> Material:
    """The material that answers ``reason`` (see rotation_reason)."""
    if reason in ("missing", "invalid"):
        ca, ca_key = make_ca(now)
        cert, key = make_serving(ca, ca_key, dns_names, now)
        return Material(ca, ca_key, cert, key)
    assert material is not None
    if reason == "ca-expiring":
        ca, ca_key = make_ca(now)
        # Keep the CAs still valid in the bundle so certificates they signed keep working.
        old = [c for c in split_bundle(material.ca_bundle) if c.not_valid_after_utc > now][:1]
        bundle = ca + b"".join(certs.cert_pem(c) for c in old)
        cert, key = make_serving(ca, ca_key, dns_names, now)
        return Material(bundle, ca_key, cert, key)
    current = certs.cert_pem(split_bundle(material.ca_bundle)[0])
    cert, key = make_serving(current, material.ca_key, dns_names, now)
    # A bundle still carrying an expired predecessor loses it here.
    bundle = b"".join(
        certs.cert_pem(c) for c in split_bundle(material.ca_bundle) if c.not_valid_after_utc > now
    )
    return Material(bundle or current, material.ca_key, cert, key)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server and in-cluster clients use for a Service."""
    return [
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        f"{service}.{namespace}",
        service,
    ]


# --- pure: Lease ---------------------------------------------------------------------


def format_micro_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def lease_action(spec: dict[str, Any] | None, identity: str, now: dt.datetime) -> str:
    """What this replica does with the Lease: "renew" (it holds it), "acquire" (free or
    expired), or "wait" (another replica holds it)."""
    spec = spec or {}
    holder = spec.get("holderIdentity")
    if holder == identity:
        return "renew"
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
    if not holder or renewed is None or renewed + dt.timedelta(seconds=duration) <= now:
        return "acquire"
    return "wait"


def lease_spec(
    previous: dict[str, Any] | None, identity: str, now: dt.datetime, seconds: int = LEASE_SECONDS
) -> dict[str, Any]:
    """The Lease spec after this replica renews or acquires it."""
    previous = previous or {}
    ts = format_micro_time(now)
    if previous.get("holderIdentity") == identity:
        return {**previous, "renewTime": ts, "leaseDurationSeconds": seconds}
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": seconds,
        "acquireTime": ts,
        "renewTime": ts,
        "leaseTransitions": int(previous.get("leaseTransitions") or 0)
        + (1 if previous.get("holderIdentity") else 0),
    }


# --- pure: caBundle ------------------------------------------------------------------


def ca_bundle_patch(configuration: dict[str, Any], ca_bundle: bytes) -> list[dict[str, Any]]:
    """JSON patch operations that set every webhook's clientConfig.caBundle (none if equal)."""
    want = base64.b64encode(ca_bundle).decode()
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(configuration.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") != want:
            ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": want})
    if ops:
        # Guard against the list changing between our read and our patch (helm upgrade).
        version = (configuration.get("metadata") or {}).get("resourceVersion")
        if version:
            ops.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
    return ops


# --- the shell -------------------------------------------------------------------------


class _Manager:
    """One replica's certificate manager; the blocking client calls run in a thread."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        secret_name: str,
        lease_name: str,
        webhook_names: Sequence[str],
        dns_names: Sequence[str],
        identity: str,
        on_certificate: CertificateCallback | None,
        lease_seconds: int,
        clock: Callable[[], dt.datetime],
    ) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.adm = client.AdmissionregistrationV1Api(api_client)
        self.api_client = api_client
        self.namespace = namespace
        self.secret_name = secret_name
        self.lease_name = lease_name
        self.webhook_names = list(webhook_names)
        self.dns_names = list(dns_names)
        self.identity = identity
        self.on_certificate = on_certificate
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.loaded: Material | None = None

    # Lease ----------------------------------------------------------------------------

    def try_lead(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        now = self.clock()
        try:
            lease = self.api_client.sanitize_for_serialization(
                self.coord.read_namespaced_lease(self.lease_name, self.namespace)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body: Any = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.lease_name, "namespace": self.namespace},
                "spec": lease_spec(None, self.identity, now, self.lease_seconds),
            }
            try:
                self.coord.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False  # another replica created it first
                raise
            log.info("certificate lease %s acquired by %s", self.lease_name, self.identity)
            return True
        spec = lease.get("spec") or {}
        action = lease_action(spec, self.identity, now)
        if action == "wait":
            return False
        lease["spec"] = lease_spec(spec, self.identity, now, self.lease_seconds)
        try:
            # replace carries the resourceVersion we read: two replicas acquiring an
            # expired lease at once -> one gets 409 and stays a follower.
            self.coord.replace_namespaced_lease(self.lease_name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        if action == "acquire":
            log.info("certificate lease %s acquired by %s", self.lease_name, self.identity)
        return True

    # Secret ---------------------------------------------------------------------------

    def read_secret(self) -> tuple[dict[str, Any] | None, Material | None]:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = self.api_client.sanitize_for_serialization(
                self.core.read_namespaced_secret(self.secret_name, self.namespace)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None, None
            raise
        return secret, Material.from_secret_data(secret.get("data"))

    def write_secret(self, secret: dict[str, Any] | None, material: Material) -> None:
        body: Any
        if secret is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": self.secret_name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/part-of": "agent-identity"},
                },
                "data": material.to_secret_data(),
            }
            self.core.create_namespaced_secret(self.namespace, body)
        else:
            body = {**secret, "data": material.to_secret_data()}
            self.core.replace_namespaced_secret(self.secret_name, self.namespace, body)

    def patch_ca_bundles(self, ca_bundle: bytes) -> None:
        from kubernetes.client.exceptions import ApiException

        for name in self.webhook_names:
            for read, patch in (
                (
                    self.adm.read_validating_webhook_configuration,
                    self.adm.patch_validating_webhook_configuration,
                ),
                (
                    self.adm.read_mutating_webhook_configuration,
                    self.adm.patch_mutating_webhook_configuration,
                ),
            ):
                try:
                    config = self.api_client.sanitize_for_serialization(read(name))
                except ApiException as exc:
                    if exc.status in (403, 404):
                        continue  # not installed (yet), or not ours to patch
                    raise
                ops = ca_bundle_patch(config, ca_bundle)
                if ops:
                    patch(name, ops)
                    log.info("caBundle of %s %s updated", config.get("kind"), name)

    # one round ------------------------------------------------------------------------

    def step(self) -> bool:
        """One round: lead if possible (rotate, publish), then load. True when leading."""
        from kubernetes.client.exceptions import ApiException

        leading = self.try_lead()
        secret, material = self.read_secret()
        if leading:
            now = self.clock()
            reason = rotation_reason(material, self.dns_names, now)
            if reason is not None:
                new = next_material(material, reason, self.dns_names, now)
                log.info("serving certificate %s: %s, writing a new one", self.secret_name, reason)
                # Trust first, serve second: the bundle reaches the API server before
                # any replica can load a certificate signed by a new CA.
                self.patch_ca_bundles(new.ca_bundle)
                try:
                    self.write_secret(secret, new)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    return leading  # someone wrote in between: read it next round
                material = new
            elif material is not None:
                self.patch_ca_bundles(material.ca_bundle)
        if material is not None and material != self.loaded:
            if rotation_reason(material, self.dns_names, self.clock()) in ("invalid", "missing"):
                return leading
            if self.on_certificate is not None:
                self.on_certificate(material.cert, material.key, material.ca_bundle)
            self.loaded = material
        return leading


async def run_certificate_manager(
    api_client: Any,
    namespace: str,
    secret_name: str,
    lease_name: str,
    webhook_names: Sequence[str],
    service_dns_names: Sequence[str],
    identity: str,
    *,
    on_certificate: CertificateCallback | None = None,
    lease_seconds: int = LEASE_SECONDS,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    stop: asyncio.Event | None = None,
) -> None:
    """Keep the serving certificate in ``secret_name`` valid and the webhooks' caBundle
    current, writing only while holding ``lease_name``; call ``on_certificate`` whenever
    the Secret holds a certificate this replica has not loaded yet. Runs until cancelled
    (or ``stop`` is set).

    ``webhook_names``: names of our Validating and MutatingWebhookConfigurations (both
    kinds are patched when present). ``identity``: this replica (e.g. the pod name).
    """
    manager = _Manager(
        api_client,
        namespace,
        secret_name,
        lease_name,
        webhook_names,
        service_dns_names,
        identity,
        on_certificate,
        lease_seconds,
        clock,
    )
    # Followers poll a little faster than the lease renews, so a dead leader is replaced
    # within about one lease period and a rotation is loaded within a few seconds.
    period = max(1.0, lease_seconds / 3)
    while stop is None or not stop.is_set():
        try:
            await asyncio.to_thread(manager.step)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("certificate manager round failed; retrying")
        if stop is None:
            await asyncio.sleep(period)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=period)


def chart_dns_names(webhook_name: str, namespace: str) -> list[str]:
    """The names of the chart's two Services, ``<name>-admission`` (webhooks) and
    ``<name>-decisions`` (decision API), where ``<name>`` is the webhook configurations'
    name: the default of ``agent-identity admission --tls-dns-names``."""
    return [
        *service_dns_names(f"{webhook_name}-admission", namespace),
        *service_dns_names(f"{webhook_name}-decisions", namespace),
    ]


@dataclass
class SelfManagedTLS:
    """A running certificate manager and the server context it keeps loaded."""

    context: ssl.SSLContext
    task: asyncio.Task[None]
    stop: asyncio.Event
    # The CA bundle that verifies the certificate loaded now (agent pods get it, since
    # the decision API serves the same certificate).
    ca_bundle: bytes = b""

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, timeout=10)


async def start_self_managed_tls(
    api_client: Any,
    namespace: str,
    secret_name: str,
    lease_name: str,
    webhook_names: Sequence[str],
    dns_names: Sequence[str],
    identity: str,
    directory: Path,
    *,
    timeout: float = 120.0,
    lease_seconds: int = LEASE_SECONDS,
) -> SelfManagedTLS:
    """Start the certificate manager and return once this replica serves a certificate.

    The returned context is what the webhook and decision servers use; after a rotation
    the manager reloads it in place (on the event loop's thread, never concurrently with
    a handshake). A replica that does not hold the Lease waits for the holder to fill the
    Secret (at most about one lease period when the holder died).
    """
    from agent_identity.admission.tls import ReloadableServingContext

    loop = asyncio.get_running_loop()
    reloader = ReloadableServingContext(directory)
    first = asyncio.Event()

    def load(cert: bytes, key: bytes, ca: bytes) -> None:
        reloader.load(cert, key)
        managed.ca_bundle = ca
        first.set()
        log.info("serving certificate loaded from Secret %s/%s", namespace, secret_name)

    def on_certificate(cert: bytes, key: bytes, ca: bytes) -> None:
        # Called from the manager's worker thread: hand the load to the loop.
        loop.call_soon_threadsafe(load, cert, key, ca)

    stop = asyncio.Event()
    task = asyncio.create_task(
        run_certificate_manager(
            api_client,
            namespace,
            secret_name,
            lease_name,
            webhook_names,
            dns_names,
            identity,
            on_certificate=on_certificate,
            lease_seconds=lease_seconds,
            stop=stop,
        )
    )
    managed = SelfManagedTLS(reloader.context, task, stop)
    try:
        await asyncio.wait_for(first.wait(), timeout=timeout)
    except TimeoutError:
        await managed.close()
        raise TimeoutError(
            f"no serving certificate in Secret {namespace}/{secret_name} after {timeout:.0f}s: "
            f"check that Secret and Lease {lease_name} exist and that this ServiceAccount may "
            "get/update them (the chart's Role does)"
        ) from None
    return managed
