"""Errors raised by crypto/.

CryptoError
 ├── BadEncoding       bytes are not canonical JSON of the accepted shape
 ├── BadSignature      an Ed25519 signature does not verify
 └── EnvelopeError     an envelope is refused before or while opening it
      ├── MalformedEnvelope   truncated, wrong magic, bad lengths, unreadable header
      ├── EnvelopeTooLarge    over the size limit, compressed or decompressed (bomb)
      ├── WrongRecipient      addressed to someone else, or to a key we do not hold
      └── DecryptionFailed    HPKE authentication failed (tampered or wrong key)
Every error carries a stable ``code`` that the web layers put in their JSON answers.
"""

from __future__ import annotations


class CryptoError(Exception):
    code = "crypto"


class BadEncoding(CryptoError):
    code = "bad_encoding"


class BadSignature(CryptoError):
    code = "bad_signature"


class EnvelopeError(CryptoError):
    code = "envelope"


class MalformedEnvelope(EnvelopeError):
    code = "malformed_envelope"


class EnvelopeTooLarge(EnvelopeError):
    code = "envelope_too_large"


class WrongRecipient(EnvelopeError):
    code = "wrong_recipient"


class DecryptionFailed(EnvelopeError):
    code = "decryption_failed"
