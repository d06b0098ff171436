"""Allocation concealment: AES-256-GCM encryption of list slots and of the list secret.

The key lives outside the database (the app loads it from the instance folder or the environment), so
someone who can read every table still cannot learn an arm before it is assigned. Each slot's ciphertext is
bound to its trial, stratum and sequence number through the associated data, so rows cannot be swapped or
moved between slots without decryption failing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# Every arm code is padded to this many bytes before encryption: without padding "HIP" and "SPINE" would
# give ciphertexts of different lengths and the column would leak the allocation to anyone reading it.
ARM_PAD_BYTES = 32
# One byte of the padded block holds the code's length, so the padding is unambiguous for any code.
ARM_CODE_MAX_BYTES = ARM_PAD_BYTES - 1
ARM_CIPHERTEXT_BYTES = NONCE_BYTES + ARM_PAD_BYTES + TAG_BYTES

_LIST_SECRET_VERSION = 1


class ConcealmentError(Exception):
    """A ciphertext failed authentication: wrong key, wrong slot (aad) or tampered bytes."""


def new_allocation_key() -> bytes:
    """A fresh random AES-256-GCM key (32 bytes)."""
    return AESGCM.generate_key(bit_length=256)


def slot_aad(trial: str, stratum: str, seq: int) -> bytes:
    """Associated data binding a slot ciphertext to (trial, stratum, seq).

    JSON of a list gives an unambiguous encoding, so ("a|b", "c") and ("a", "b|c") can never collide.
    """
    return b"trialmgr-slot-v1:" + json.dumps([trial, stratum, int(seq)], ensure_ascii=False).encode()


def _pad_arm(arm: str) -> bytes:
    raw = arm.encode("utf-8")
    if not raw or len(raw) > ARM_CODE_MAX_BYTES:
        raise ValueError(f"arm code must be 1..{ARM_CODE_MAX_BYTES} UTF-8 bytes, got {len(raw)}")
    return bytes([len(raw)]) + raw + bytes(ARM_PAD_BYTES - 1 - len(raw))


def _unpad_arm(block: bytes) -> str:
    n = block[0]
    if len(block) != ARM_PAD_BYTES or not 1 <= n <= ARM_CODE_MAX_BYTES or any(block[1 + n :]):
        # Only reachable with the right key, i.e. a bug or a foreign writer; refuse rather than guess.
        raise ConcealmentError("decrypted arm block is malformed")
    return block[1 : 1 + n].decode("utf-8")


def _check_key(key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"allocation key must be {KEY_BYTES} bytes, got {len(key)}")


class ArmCipher:
    """Holds one AESGCM instance so bulk encryption of a whole list does not rebuild it per slot."""

    def __init__(self, key: bytes) -> None:
        _check_key(key)
        self._aead = AESGCM(key)

    def encrypt(self, aad: bytes, arm: str) -> bytes:
        # Random 96-bit nonces: safe for far more than any list (NIST SP 800-38D caps at 2**32 messages
        # per key), and no counter state has to be kept consistent across processes.
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, _pad_arm(arm), aad)

    def decrypt(self, aad: bytes, blob: bytes) -> str:
        if len(blob) != ARM_CIPHERTEXT_BYTES:
            raise ConcealmentError(f"arm ciphertext must be {ARM_CIPHERTEXT_BYTES} bytes, got {len(blob)}")
        try:
            block = self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise ConcealmentError("arm ciphertext failed authentication (wrong key, slot or data)") from None
        return _unpad_arm(block)

    def encrypt_many(self, items: Iterable[tuple[bytes, str]]) -> list[bytes]:
        """Encrypt (aad, arm) pairs in order; for the one-off bulk insert of a generated list."""
        return [self.encrypt(aad, arm) for aad, arm in items]


def encrypt_arm(key: bytes, aad: bytes, arm: str) -> bytes:
    """Encrypt one arm code; the result is always ARM_CIPHERTEXT_BYTES long whatever the arm."""
    return ArmCipher(key).encrypt(aad, arm)


def decrypt_arm(key: bytes, aad: bytes, blob: bytes) -> str:
    """Decrypt one slot; raises ConcealmentError if the key, the aad or the bytes do not match."""
    return ArmCipher(key).decrypt(aad, blob)


def encrypt_blob(key: bytes, aad: bytes, data: bytes) -> bytes:
    """Encrypt arbitrary bytes (the list secret); nonce || ciphertext || tag."""
    _check_key(key)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def decrypt_blob(key: bytes, aad: bytes, blob: bytes) -> bytes:
    _check_key(key)
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise ConcealmentError("ciphertext is too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise ConcealmentError("ciphertext failed authentication (wrong key, aad or tampered)") from None


def pack_list_secret(salt: bytes, master_entropy: int) -> bytes:
    """Serialise the commitment salt and the generator entropy, to be stored with encrypt_blob."""
    if master_entropy < 0:
        raise ValueError("master_entropy must be non-negative")
    doc = {"v": _LIST_SECRET_VERSION, "salt": salt.hex(), "master_entropy": str(master_entropy)}
    return json.dumps(doc, sort_keys=True).encode()


def unpack_list_secret(data: bytes) -> tuple[bytes, int]:
    """Inverse of pack_list_secret: (salt, master_entropy)."""
    doc = json.loads(data)
    if doc.get("v") != _LIST_SECRET_VERSION:
        raise ValueError(f"unsupported list secret version {doc.get('v')!r}")
    return bytes.fromhex(doc["salt"]), int(doc["master_entropy"])


def decrypt_arms(key: bytes, items: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """Decrypt (aad, blob) pairs in order; used at reveal, after database lock."""
    cipher = ArmCipher(key)
    return [cipher.decrypt(aad, blob) for aad, blob in items]
