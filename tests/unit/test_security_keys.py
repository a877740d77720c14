"""Private files and CURVE key files: 0600 from the first byte, reloaded, refused when unsafe."""
import os
import stat
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.wire.security import files as security_files
from raftkv.wire.security.files import PrivateFileError, read_private_file, write_private_file
from raftkv.wire.security.keys import (
    KeyFileError, derive_keypair, format_keypair, generate_keypair, load_keypair, load_or_create_keypair,
    parse_keypair,
)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_key_pair_is_created_0600_and_reloaded(tmp_path):
    path = tmp_path / "node" / "curve.key"
    pair = load_or_create_keypair(path)
    assert mode(path) == 0o600
    assert mode(path.parent) & 0o077 == 0
    assert load_or_create_keypair(path) == pair
    assert load_keypair(path) == pair
    assert len(pair.public) == 40 and pair.public != pair.secret


def test_private_file_is_never_readable_by_others_even_before_rename(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(mode(src))
        return real_replace(src, dst)

    monkeypatch.setattr(security_files.os, "replace", spy)
    old = os.umask(0)  # the most permissive umask: the file must still be 0600
    try:
        write_private_file(tmp_path / "t", b"secret")
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert mode(tmp_path / "t") == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temporary file left behind


def test_world_readable_key_file_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "curve.key"
    load_or_create_keypair(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match=r"0644.*chmod 600"):
        load_keypair(path)
    with pytest.raises(KeyFileError):
        load_or_create_keypair(path)  # never silently replaced by a new identity


def test_group_writable_private_file_is_refused(tmp_path):
    path = write_private_file(tmp_path / "x", b"data")
    os.chmod(path, 0o620)
    with pytest.raises(PrivateFileError, match="too open"):
        read_private_file(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_keypair(tmp_path / "none.key")


@pytest.mark.parametrize("text, message", [
    (b"", "no 'public"),
    (b"hello world\n", "line 1"),
    (b"public = abc\nsecret = abc\n", "40 Z85 characters"),
    (b"public = " + b"~" * 40 + b"\nsecret = " + b"~" * 40 + b"\n", "Z85|40"),
    (b"public = " + b"#" * 40 + b"\nsecret = " + b"#" * 40 + b"\n", "Z85"),  # decodes past 2**32
    (("public = " + "é" * 40 + "\nsecret = x\n").encode(), "Z85|40"),
])
def test_bad_key_file_format_is_refused_clearly(tmp_path, text, message):
    path = write_private_file(tmp_path / "curve.key", text)
    with pytest.raises(KeyFileError, match=message):
        load_keypair(path)


def test_key_file_whose_public_key_does_not_match_is_refused():
    a, b = generate_keypair(), generate_keypair()
    text = format_keypair(a).replace(a.public, b.public)
    with pytest.raises(KeyFileError, match="not the one the secret key makes"):
        parse_keypair(text)


def test_duplicate_field_is_refused():
    a = generate_keypair()
    with pytest.raises(KeyFileError, match="twice"):
        parse_keypair(format_keypair(a) + b"secret = " + a.secret + b"\n")


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    path = tmp_path / "curve.key"
    results, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        results.append(load_or_create_keypair(path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert load_keypair(path) == results[0]


def test_derived_key_pairs_are_deterministic_and_separated_by_purpose():
    s = b"\x01" * 32
    assert derive_keypair(s, b"join") == derive_keypair(s, b"join")
    assert derive_keypair(s, b"join") != derive_keypair(s, b"client")
    assert derive_keypair(s, b"join") != derive_keypair(b"\x02" * 32, b"join")


def test_repr_hides_the_secret_key():
    pair = generate_keypair()
    assert pair.secret.decode() not in repr(pair)


def test_check_public_key_refuses_anything_but_40_z85_characters():
    from raftkv.wire.security.keys import check_public_key
    good = generate_keypair().public
    assert check_public_key(good) == good == check_public_key(good.decode())
    for bad in [b"", good[:-1], good + b"0", b"#" * 40, "é" * 40, b"\x00" * 40]:
        with pytest.raises(ValueError):
            check_public_key(bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda a, b: b"public = " + a + b"\nsecret = " + b + b"\n",
                                           st.binary(min_size=40, max_size=40), st.binary(min_size=40, max_size=40)))
def test_any_key_file_content_loads_or_is_a_key_file_error(text):
    try:
        parse_keypair(text)
    except KeyFileError:
        pass
