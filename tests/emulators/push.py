"""Push senders of the emulated providers: Cloud Pub/Sub push, Calendar channels, GitHub hooks.

- `PushSender`: a background thread that POSTs notifications in order and, like Pub/Sub,
  retries an unacknowledged one with backoff (Pub/Sub "Push subscriptions": any status other
  than 102, 200, 201, 202 or 204 is a negative acknowledgement and the message is redelivered;
  GitHub does not retry by itself, Calendar retries with exponential backoff per the
  Calendar push guide, "Responding to notifications"). Every attempt is logged.
- `PubSub`: topics with authenticated push subscriptions. Each delivery carries
  `Authorization: Bearer <OIDC JWT>` signed RS256 with a local RSA key whose X.509 certificate
  is served at `/oauth2/v1/certs` as `{kid: PEM}` with `Cache-Control: max-age` (the shape of
  https://www.googleapis.com/oauth2/v1/certs). Claims as in Pub/Sub "Authentication for push
  subscriptions": `iss` https://accounts.google.com, `aud` the subscription's audience,
  `email` the service account, `email_verified` true, `sub`, `azp`, `iat`, `exp` (one hour).
  The body is `{"message": {"data": base64(JSON), "messageId", "message_id", "publishTime",
  "publish_time", "attributes"?}, "subscription": "projects/P/subscriptions/S"}` (Pub/Sub
  "Receive messages from push subscriptions", the wrapped payload).
- `github_delivery`: headers and body of a webhook delivery as GitHub sends them (GitHub
  "Webhook events and payloads", delivery headers; "Validating webhook deliveries":
  `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = [
    "PubSub",
    "PushAttempt",
    "PushSender",
    "SigningKey",
    "github_delivery",
]

#: Statuses Pub/Sub takes as an acknowledgement (Pub/Sub "Push subscriptions").
ACK_STATUSES = frozenset({102, 200, 201, 202, 204})


@dataclass
class PushAttempt:
    url: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    at: float


@dataclass
class _Pending:
    url: str
    headers: dict[str, str]
    body: bytes
    attempts_left: int
    tag: Any = None


class PushSender:
    """POSTs notifications from a background thread, retrying non-acknowledged ones."""

    def __init__(self, *, retries: int = 3, backoff: float = 0.2) -> None:
        self.retries = retries
        self.backoff = backoff
        self.attempts: list[PushAttempt] = []
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._client = httpx.Client(timeout=10.0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, retry: bool = True
    ) -> None:
        self._idle.clear()
        self._queue.put(_Pending(url, dict(headers), body, self.retries if retry else 0))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification was delivered or given up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def statuses(self) -> list[int | None]:
        with self._lock:
            return [a.status for a in self.attempts]

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._client.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                return
            status: int | None
            try:
                status = self._client.post(
                    item.url, headers=item.headers, content=item.body
                ).status_code
            except httpx.HTTPError:
                status = None
            with self._lock:
                self.attempts.append(
                    PushAttempt(item.url, item.headers, item.body, status, time.time())
                )
            if status not in ACK_STATUSES and item.attempts_left > 0:
                time.sleep(self.backoff)
                item.attempts_left -= 1
                self._queue.put(item)
            self._queue.task_done()


class SigningKey:
    """A local RSA key and its self-signed certificate, standing in for Google's."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulated-google-oidc")])
        now = datetime.now(UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=14))
            .sign(self.private, hashes.SHA256())
        )
        self.certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
        pem = self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.signer = crypt.RSASigner.from_string(pem, key_id=self.kid)

    def sign(self, claims: Mapping[str, Any]) -> str:
        token: bytes = jwt.encode(self.signer, dict(claims))
        return token.decode()


@dataclass
class Subscription:
    name: str
    endpoint: str
    audience: str
    service_account: str


@dataclass
class PubSub:
    """Topics and authenticated push subscriptions (one project)."""

    key: SigningKey = field(default_factory=SigningKey)
    sender: PushSender = field(default_factory=PushSender)
    subscriptions: dict[str, list[Subscription]] = field(default_factory=dict)
    #: Certificates served at /oauth2/v1/certs (kid -> PEM); rotate by adding keys.
    published_keys: list[SigningKey] = field(default_factory=list)
    cert_requests: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000_000_001))

    def __post_init__(self) -> None:
        self.published_keys.append(self.key)

    def subscribe(
        self, topic: str, endpoint: str, *, audience: str, service_account: str, name: str = "s"
    ) -> None:
        self.subscriptions.setdefault(topic, []).append(
            Subscription(
                f"projects/emulated/subscriptions/{name}", endpoint, audience, service_account
            )
        )

    def claims(self, audience: str, email: str, *, lifetime: int = 3600) -> dict[str, Any]:
        now = int(time.time())
        return {
            "aud": audience,
            "azp": "113774264463038321964",
            "email": email,
            "email_verified": True,
            "exp": now + lifetime,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": "113774264463038321964",
        }

    def envelope(
        self, data: Mapping[str, Any], subscription: str = "projects/emulated/subscriptions/s"
    ) -> tuple[str, bytes]:
        """(messageId, body) of one push delivery of `data`."""
        message_id = str(next(self._ids))
        published = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        encoded = base64.b64encode(json.dumps(data).encode()).decode()
        body = {
            "message": {
                "data": encoded,
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": published,
                "publish_time": published,
            },
            "subscription": subscription,
        }
        return message_id, json.dumps(body).encode()

    def publish(self, topic: str, data: Mapping[str, Any]) -> None:
        """Push `data` to every subscription of `topic` (from the sender's thread)."""
        for sub in self.subscriptions.get(topic, []):
            _, body = self.envelope(data, sub.name)
            token = self.key.sign(self.claims(sub.audience, sub.service_account))
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
            }
            self.sender.post(sub.endpoint, headers, body)

    def create_app(self) -> Starlette:
        """Google's certificate endpoint: `GET /oauth2/v1/certs`."""

        async def certs(_request: Request) -> JSONResponse:
            self.cert_requests += 1
            body = {k.kid: k.certificate_pem for k in self.published_keys}
            return JSONResponse(
                body,
                headers={"Cache-Control": "public, max-age=20000, must-revalidate, no-transform"},
            )

        return Starlette(routes=[Route("/oauth2/v1/certs", certs)])


def github_delivery(
    event: str, payload: Mapping[str, Any], secret: str, *, delivery: str | None = None
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one webhook delivery, signed as GitHub signs it."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    digest256 = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    digest1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/8d33975",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": f"sha1={digest1}",
        "X-Hub-Signature-256": f"sha256={digest256}",
    }
    return headers, body
