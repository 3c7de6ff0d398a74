from __future__ import annotations

from server.core.signing import sign, verify


def test_signature_verifies_until_expiry() -> None:
    expires, sig = sign("secret", "img1", "thumbnail", now=1000.0, ttl_s=3600)
    assert expires >= 1000 + 3600 and expires % 3600 == 0
    assert verify("secret", "img1", "thumbnail", expires=expires, signature=sig, now=1000.0)
    assert not verify("secret", "img1", "thumbnail", expires=expires, signature=sig,
                      now=expires + 1)


def test_signature_binds_secret_image_kind_and_expiry() -> None:
    expires, sig = sign("secret", "img1", "thumbnail", now=0.0, ttl_s=3600)
    assert not verify("other", "img1", "thumbnail", expires=expires, signature=sig, now=0.0)
    assert not verify("secret", "img2", "thumbnail", expires=expires, signature=sig, now=0.0)
    assert not verify("secret", "img1", "original", expires=expires, signature=sig, now=0.0)
    assert not verify("secret", "img1", "thumbnail", expires=expires + 3600, signature=sig,
                      now=0.0)


def test_a_signature_with_any_characters_is_just_wrong() -> None:
    expires, _ = sign("secret", "img1", "thumbnail", now=0.0, ttl_s=3600)
    for hostile in ("é" * 32, "\udcff", "", "\x00"):
        assert not verify("secret", "img1", "thumbnail", expires=expires, signature=hostile,
                          now=0.0)
