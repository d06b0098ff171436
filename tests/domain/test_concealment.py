"""Concealment: slots encrypted so that the database alone reveals nothing, not even through lengths."""

from __future__ import annotations

import pytest

from trialmgr.domain.concealment import (
    ARM_CIPHERTEXT_BYTES,
    ArmCipher,
    ConcealmentError,
    decrypt_arm,
    decrypt_arms,
    decrypt_blob,
    encrypt_arm,
    encrypt_blob,
    new_allocation_key,
    pack_list_secret,
    slot_aad,
    unpack_list_secret,
)

KEY = bytes(range(32))
AAD = slot_aad("hip-pt", "DE|F", 7)
ARMS = ["HIP", "SPINE", "A", "X" * 31, "Physiothérapie"]


@pytest.mark.parametrize("arm", ARMS)
def test_round_trip(arm):
    assert decrypt_arm(KEY, AAD, encrypt_arm(KEY, AAD, arm)) == arm


def test_ciphertext_length_is_the_same_for_every_arm():
    lengths = {len(encrypt_arm(KEY, AAD, arm)) for arm in ARMS}
    assert lengths == {ARM_CIPHERTEXT_BYTES}


def test_same_arm_encrypts_differently_each_time():
    assert encrypt_arm(KEY, AAD, "HIP") != encrypt_arm(KEY, AAD, "HIP")


def test_a_ciphertext_cannot_be_moved_to_another_slot():
    blob = encrypt_arm(KEY, AAD, "HIP")
    for other in (slot_aad("hip-pt", "DE|F", 8), slot_aad("hip-pt", "DE|M", 7), slot_aad("mash", "DE|F", 7)):
        with pytest.raises(ConcealmentError):
            decrypt_arm(KEY, other, blob)


@pytest.mark.parametrize("index", [0, 11, 12, 30, ARM_CIPHERTEXT_BYTES - 1])
def test_tampered_ciphertext_is_rejected(index):
    blob = bytearray(encrypt_arm(KEY, AAD, "SPINE"))
    blob[index] ^= 0x01
    with pytest.raises(ConcealmentError):
        decrypt_arm(KEY, AAD, bytes(blob))


def test_wrong_key_and_truncation_are_rejected():
    blob = encrypt_arm(KEY, AAD, "SPINE")
    with pytest.raises(ConcealmentError):
        decrypt_arm(new_allocation_key(), AAD, blob)
    with pytest.raises(ConcealmentError, match="must be"):
        decrypt_arm(KEY, AAD, blob[:-1])


def test_bad_keys_and_arm_codes_are_refused():
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt_arm(b"short", AAD, "HIP")
    with pytest.raises(ValueError, match="1..31"):
        encrypt_arm(KEY, AAD, "X" * 32)
    with pytest.raises(ValueError):
        encrypt_arm(KEY, AAD, "")
    assert len(new_allocation_key()) == 32 and new_allocation_key() != new_allocation_key()


def test_slot_aad_is_unambiguous():
    assert slot_aad("t", "a|b", 1) != slot_aad("t|a", "b", 1)
    assert slot_aad("t", "a", 11) != slot_aad("t", "a1", 1)


def test_bulk_helpers():
    cipher = ArmCipher(KEY)
    items = [(slot_aad("t", "S", i), arm) for i, arm in enumerate(["HIP", "SPINE", "HIP"], start=1)]
    blobs = cipher.encrypt_many(items)
    assert decrypt_arms(KEY, [(aad, blob) for (aad, _), blob in zip(items, blobs, strict=True)]) == [
        "HIP",
        "SPINE",
        "HIP",
    ]


def test_list_secret_blob_round_trip_and_tamper():
    salt = bytes(range(100, 132))
    secret = pack_list_secret(salt, 2**127 + 3)
    blob = encrypt_blob(KEY, b"trial:hip-pt", secret)
    assert unpack_list_secret(decrypt_blob(KEY, b"trial:hip-pt", blob)) == (salt, 2**127 + 3)
    with pytest.raises(ConcealmentError):
        decrypt_blob(KEY, b"trial:mash", blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ConcealmentError):
        decrypt_blob(KEY, b"trial:hip-pt", tampered)
    with pytest.raises(ConcealmentError):
        decrypt_blob(KEY, b"trial:hip-pt", b"short")
