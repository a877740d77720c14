"""CURVE key pairs: a node's own pair (its identity at the peer door) and the cluster's server pair.

Keys are Z85 text (40 characters for 32 bytes), the form pyzmq's socket options take. A key
file is a short text file, mode 0600::

    # raftkv CURVE key pair: private, keep this file mode 0600
    public = <40 characters>
    secret = <40 characters>

Loading checks the permissions, the format, and that the public key is the one the secret key
makes, so a truncated or hand-edited file is refused with a clear message instead of failing
later as a silent handshake timeout.

Key pairs can also be *derived* from a token secret (:func:`derive_keypair`): the holder of a
join or client token computes its CURVE client key pair from the token, and the cluster stores
only the public half, so the CURVE handshake itself proves the token without sending it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import zmq
from zmq.utils import z85

from .files import PathLike, PrivateFileError, read_private_file, write_private_file

KEY_FILE_HEADER = "# raftkv CURVE key pair: private, keep this file mode 0600\n"
Z85_KEY_LEN = 40
RAW_KEY_LEN = 32


class KeyFileError(PrivateFileError):
    """A key file that cannot be used (permissions, format, or a public key that does not match)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair as Z85 bytes (what ``curve_publickey``/``curve_secretkey`` take)."""

    public: bytes
    secret: bytes

    def __repr__(self) -> str:  # never print a secret key into a log by accident
        return f"KeyPair(public={self.public.decode('ascii')!r}, secret=<hidden>)"

    @property
    def public_text(self) -> str:
        """The public key as text, for configurations, tokens and logs."""
        return self.public.decode("ascii")


def generate_keypair() -> KeyPair:
    """A fresh random key pair (libsodium, through libzmq)."""
    public, secret = zmq.curve_keypair()
    return KeyPair(public, secret)


def check_public_key(key: Union[str, bytes]) -> bytes:
    """``key`` as Z85 bytes if it is a well-formed CURVE public key; ValueError otherwise."""
    if isinstance(key, str):
        try:
            key = key.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("a CURVE public key is 40 Z85 characters") from None
    if len(key) != Z85_KEY_LEN:
        raise ValueError(f"a CURVE public key is {Z85_KEY_LEN} Z85 characters, got {len(key)}")
    try:
        z85.decode(key)
    except Exception:  # pyzmq's decoder raises several types (KeyError, struct.error, ...) for garbage
        raise ValueError("a CURVE public key is 40 Z85 characters; this one has others") from None
    return key


def keypair_from_secret(secret: bytes) -> KeyPair:
    """The key pair whose secret key is ``secret`` (Z85); the public key is computed from it."""
    secret = check_public_key(secret)  # same shape as a public key
    return KeyPair(zmq.curve_public(secret), secret)


def derive_keypair(token_secret: bytes, purpose: bytes) -> KeyPair:
    """The CURVE key pair a token's holder uses, derived from the token's secret.

    BLAKE2b with a personalisation string per ``purpose`` (b"join", b"client") separates these
    keys from each other and from the stored secret hash (:mod:`security_tokens`), so knowing one
    says nothing of the others. Any 32 bytes are a valid X25519 secret key (it is clamped).
    """
    if len(purpose) > 10:
        raise ValueError("purpose: at most 10 bytes")
    seed = hashlib.blake2b(token_secret, digest_size=RAW_KEY_LEN, person=b"raftkv-k-" + purpose).digest()
    return keypair_from_secret(z85.encode(seed))


def format_keypair(pair: KeyPair) -> bytes:
    """The key file text for ``pair``."""
    return (KEY_FILE_HEADER
            + f"public = {pair.public.decode('ascii')}\n"
            + f"secret = {pair.secret.decode('ascii')}\n").encode("ascii")


def parse_keypair(text: bytes, where: str = "key file") -> KeyPair:
    """The key pair in a key file's text; :class:`KeyFileError` saying what is wrong otherwise."""
    fields: dict[str, bytes] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        name, eq, value = line.partition(b"=")
        name_s = name.strip().decode("ascii", "replace")
        if not eq or name_s not in ("public", "secret"):
            raise KeyFileError(f"{where}: line {n}: expected 'public = KEY' or 'secret = KEY'")
        if name_s in fields:
            raise KeyFileError(f"{where}: line {n}: '{name_s}' given twice")
        fields[name_s] = value.strip()
    for name_s in ("public", "secret"):
        if name_s not in fields:
            raise KeyFileError(f"{where}: no '{name_s} = ...' line")
        try:
            check_public_key(fields[name_s])
        except ValueError as e:
            raise KeyFileError(f"{where}: {name_s} key: {e}") from None
    pair = keypair_from_secret(fields["secret"])
    if pair.public != fields["public"]:
        raise KeyFileError(f"{where}: the public key is not the one the secret key makes (damaged file?)")
    return pair


def write_keypair(path: PathLike, pair: KeyPair, *, overwrite: bool = True) -> Path:
    """Write ``pair`` to ``path`` atomically, mode 0600 from the first byte."""
    return write_private_file(path, format_keypair(pair), overwrite=overwrite)


def load_keypair(path: PathLike) -> KeyPair:
    """The key pair in ``path``; :class:`KeyFileError` for loose permissions or a bad format.

    :class:`FileNotFoundError` passes through.
    """
    try:
        text = read_private_file(path)
    except PrivateFileError as e:
        raise KeyFileError(str(e)) from None
    return parse_keypair(text, str(path))


def load_or_create_keypair(path: PathLike) -> KeyPair:
    """The key pair in ``path``, made (random) and saved there first if the file does not exist.

    Safe against two processes starting at once: exactly one file is created and both get it.
    """
    try:
        return load_keypair(path)
    except FileNotFoundError:
        pass
    pair = generate_keypair()
    try:
        write_keypair(path, pair, overwrite=False)
    except FileExistsError:
        return load_keypair(path)
    return pair
