"""OAuth tokens encrypted at rest in Better Auth's own format (`account.encryptOAuthTokens`).

The product's server (Better Auth) and this service share the `"account"` rows, so both must
read what the other writes. Better Auth (checked against better-auth 1.7.25, `better-auth/crypto`
`symmetricEncrypt` / `symmetricDecrypt` and `better-auth/oauth2` `setTokenUtil` /
`decryptOAuthToken`) encrypts the `accessToken` and `refreshToken` columns (not `idToken`) so:

- XChaCha20-Poly1305 (IETF, no associated data), key = SHA-256 of the secret's UTF-8 bytes, a
  random 24-byte nonce; the value is lowercase hex of nonce ‖ ciphertext ‖ 16-byte tag.
- With a single secret (`BETTER_AUTH_SECRET`) the value is that bare hex.
- With versioned secrets (`BETTER_AUTH_SECRETS`, current first) the value is the envelope
  `$ba$<version>$<hex>`, encrypted with that version's secret; bare hex values are still read
  with `BETTER_AUTH_SECRET` as the legacy secret (unless it is Better Auth's built-in default).
- A value is taken for encrypted when it starts with `$ba$`, or is an even number of hex digits
  (either case); anything else is plain text, read as it is. This is Better Auth's own test
  (`isLikelyEncrypted`), with one deliberate difference: hex shorter than the smallest
  ciphertext (82 digits: nonce, tag and one byte) cannot be a ciphertext and is plain here
  (Better Auth fails on it; an old 40-digit GitHub token is such a value).

`TokenCipher.seal` writes that format, `TokenCipher.open` reads it; a value no configured secret
opens raises `UnreadableToken` with one line that names the setting to fix and never the value.
The cryptography is libsodium's (PyNaCl); nothing here is home-made but the framing.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_ABYTES,
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
)
from nacl.exceptions import CryptoError

from ingestion.config import Settings, js_parse_int

__all__ = ["PLAIN_TEXT", "TokenCipher", "UnreadableToken", "looks_encrypted"]

ENVELOPE_PREFIX = "$ba$"
#: Better Auth's built-in secret when none is configured; never a legacy secret (its
#: `buildSecretConfig` drops it).
DEFAULT_SECRET = "better-auth-secret-12345678901234567890"  # noqa: S105 (public, to exclude it)
NONCE_BYTES = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16
#: Hex digits of the shortest ciphertext of a non-empty token.
MIN_SEALED_HEX = 2 * (NONCE_BYTES + TAG_BYTES + 1)
#: Longest stored value read (tokens are a few hundred characters; ID tokens a few thousand).
MAX_STORED_CHARS = 65_536

_HEX = re.compile(r"[0-9a-fA-F]*")


class UnreadableToken(Exception):
    """A stored token that the configured secrets do not decrypt. The message is one line that
    names the setting to fix; it never contains the value."""


def looks_encrypted(value: str) -> bool:
    """Better Auth's test for an encrypted value (see the module docstring)."""
    if value.startswith(ENVELOPE_PREFIX):
        return True
    return len(value) >= MIN_SEALED_HEX and len(value) % 2 == 0 and _is_hex(value)


def _is_hex(value: str) -> bool:
    return _HEX.fullmatch(value) is not None


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class TokenCipher:
    """Reads and writes the token columns with the configured Better Auth secrets.

    `versions` (version → key) and `current` come from `BETTER_AUTH_SECRETS`; `single` is the
    key of `BETTER_AUTH_SECRET`: the only key without `BETTER_AUTH_SECRETS`, the legacy key for
    bare-hex values with it. Without any secret the cipher is off: values are written as they
    are, and encrypted-looking values cannot be read.
    """

    versions: Mapping[int, bytes] = field(default_factory=dict, repr=False)
    current: int | None = None
    single: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenCipher:
        secret = (
            settings.better_auth_secret.get_secret_value() if settings.better_auth_secret else ""
        )
        pairs = settings.better_auth_versions
        if not pairs:
            return cls(single=_key(secret)) if secret else PLAIN_TEXT
        return cls(
            versions={version: _key(value) for version, value in pairs},
            current=pairs[0][0],
            single=_key(secret) if secret and secret != DEFAULT_SECRET else None,
        )

    @property
    def enabled(self) -> bool:
        """Whether tokens are written encrypted."""
        return self.current is not None or self.single is not None

    # --- writing -------------------------------------------------------------------------------

    def seal(self, token: str) -> str:
        """The value to store for `token`: encrypted when a secret is set (an empty token stays
        empty, as Better Auth leaves it)."""
        if not token:
            return token
        if self.current is not None:
            return f"{ENVELOPE_PREFIX}{self.current}${_encrypt(self.versions[self.current], token)}"
        if self.single is not None:
            return _encrypt(self.single, token)
        return token

    def needs_sealing(self, stored: str | None) -> bool:
        """A plain value that this cipher would write encrypted."""
        return bool(stored) and self.enabled and not looks_encrypted(stored or "")

    # --- reading -------------------------------------------------------------------------------

    def open(self, stored: str, column: str) -> str:
        """The token in `stored` (the value of `column`); plain values come back as they are.

        Raises `UnreadableToken` when the value looks encrypted and no configured secret
        decrypts it.
        """
        if not stored or not looks_encrypted(stored):
            return stored
        if len(stored) > MAX_STORED_CHARS:
            raise UnreadableToken(
                f"the {column} column holds {len(stored)} characters, more than a token "
                f"({MAX_STORED_CHARS}); it cannot be read with BETTER_AUTH_SECRET"
            )
        if not self.enabled:
            raise UnreadableToken(
                f"the {column} column is encrypted (Better Auth encryptOAuthTokens) but neither "
                f"BETTER_AUTH_SECRET nor BETTER_AUTH_SECRETS is set; set them to the product's "
                f"Better Auth secret(s)"
            )
        if stored.startswith(ENVELOPE_PREFIX):
            return self._open_envelope(stored, column)
        if self.single is None:
            raise UnreadableToken(
                f"the {column} column is in Better Auth's single-secret format, which needs "
                f"BETTER_AUTH_SECRET (the secret used before BETTER_AUTH_SECRETS); it is not set"
            )
        name = "BETTER_AUTH_SECRET" if self.current is None else "BETTER_AUTH_SECRET (legacy)"
        return _decrypt(self.single, stored, column, name)

    def _open_envelope(self, stored: str, column: str) -> str:
        version_text, sep, data = stored[len(ENVELOPE_PREFIX) :].partition("$")
        version = js_parse_int(version_text) if sep else None
        if version is None or version < 0:
            raise UnreadableToken(
                f"the {column} column starts with {ENVELOPE_PREFIX} but is not a Better Auth "
                f"envelope; no BETTER_AUTH_SECRET can read it"
            )
        if self.current is None:
            raise UnreadableToken(
                f"the {column} column is encrypted with version {version} of "
                f"BETTER_AUTH_SECRETS, which is not set (only BETTER_AUTH_SECRET is); set "
                f"BETTER_AUTH_SECRETS as the product's server has it"
            )
        key = self.versions.get(version)
        if key is None:
            known = ", ".join(str(v) for v in self.versions)
            raise UnreadableToken(
                f"the {column} column is encrypted with version {version} of "
                f"BETTER_AUTH_SECRETS, which lists only version(s) {known}; add that version"
            )
        return _decrypt(key, data, column, f"version {version} of BETTER_AUTH_SECRETS")


#: The cipher when no Better Auth secret is configured.
PLAIN_TEXT = TokenCipher()


def _encrypt(key: bytes, token: str) -> str:
    nonce = os.urandom(NONCE_BYTES)
    sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(token.encode("utf-8"), None, nonce, key)
    return (nonce + sealed).hex()


def _decrypt(key: bytes, data: str, column: str, secret_name: str) -> str:
    failure = UnreadableToken(
        f"{secret_name} does not decrypt the {column} column (a different secret than the "
        f"product's server uses, or a damaged value); set BETTER_AUTH_SECRET / "
        f"BETTER_AUTH_SECRETS to the product's Better Auth secret(s)"
    )
    if len(data) % 2 or len(data) < MIN_SEALED_HEX or not _is_hex(data):
        raise failure
    raw = bytes.fromhex(data)
    try:
        plain = crypto_aead_xchacha20poly1305_ietf_decrypt(
            raw[NONCE_BYTES:], None, raw[:NONCE_BYTES], key
        )
        return plain.decode("utf-8")
    except (CryptoError, UnicodeDecodeError):
        raise failure from None
