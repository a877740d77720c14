#!/usr/bin/env bash
# The PING-abort guard (wire/door_hardening.py) is only active on a pyzmq built with ZeroMQ's
# draft API, which pyzmq's wheels are not. Build one into a venv of its own with
# contrib/hardened-zmq.sh, as docs/operations.md tells users to, and run the tests that assert
# the guard there (on the wheels the same tests pin the abort instead). Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HARDENED_VENV:-/tmp/raftkv-hardened-venv}

missing=()
for pkg in cmake g++ make pkg-config libsodium-dev dpkg-dev patch; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# apt-get source needs a deb-src entry for this release; a fresh machine has only binary ones.
src_list=/etc/apt/sources.list.d/raftkv-ci-src.sources
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    . /etc/os-release
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$VERSION_CODENAME" > "$src_list"
    apt-get update >/dev/null
elif [ ${#missing[@]} -gt 0 ]; then
    apt-get update >/dev/null
fi
[ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null

rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e '.[test]'
bash contrib/hardened-zmq.sh "$venv"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit/test_peer_no_ping.py
