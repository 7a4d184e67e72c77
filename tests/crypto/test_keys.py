from __future__ import annotations

import stat

import pytest

from crypto.errors import BadSignature
from crypto.keys import Identity, verify


def test_keys_saved_owner_only_and_reload(tmp_path):
    ident = Identity.generate()
    ident.save(tmp_path / "keys")
    for name in ("sign.pem", "enc.pem"):
        assert stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode) == 0o600
    again = Identity.load(tmp_path / "keys")
    assert again.public == ident.public
    with pytest.raises(FileExistsError):
        Identity.generate().save(tmp_path / "keys")


def test_signature_verifies_only_for_the_same_bytes():
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    verify(ident.public.sign, sig, b"hello")
    with pytest.raises(BadSignature):
        verify(ident.public.sign, sig, b"hellp")
    with pytest.raises(BadSignature):
        verify(Identity.generate().public.sign, sig, b"hello")


@pytest.mark.parametrize("text", ["AA+A", "AA/A", "AAA=", "A", "AB", "ÄÄÄÄ", " AAA"])
def test_base64url_is_strict(text):
    from crypto.errors import BadEncoding
    from crypto.keys import unb64
    with pytest.raises(BadEncoding):
        unb64(text)
