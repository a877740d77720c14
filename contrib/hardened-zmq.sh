#!/usr/bin/env bash
# A "hardened build": gives a venv a libzmq and a pyzmq built with ZeroMQ's draft API, so that
# kvnode can set ZMQ_IN_BATCH_SIZE on its doors and no party that completes a ZeroMQ handshake
# can abort the node (the PING abort; docs/operations.md, "The PING abort guard").
#
#   contrib/hardened-zmq.sh VENV          # e.g. /opt/raftkv/venv, made with python3 -m venv
#   VENV/bin/pip install raftkv           # before or after: pip keeps the pyzmq built here
#
# libzmq's source comes from the distribution's source package (Debian 12: zeromq3 4.3.4, with
# Debian's patches), or from LIBZMQ_SRC=/path/to/libzmq-4.3.x.tar.gz. libzmq goes into VENV/lib
# (pyzmq finds it through its RPATH), pyzmq (the venv's version, or PYZMQ_VERSION) is compiled from
# its sdist on PyPI. Needs: cmake, g++, make, pkg-config, libsodium-dev (CURVE), and for the
# source package a deb-src entry for the release, e.g. /etc/apt/sources.list.d/src.sources:
#   Types: deb-src
#   URIs: http://deb.debian.org/debian
#   Suites: bookworm
#   Components: main
#   Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
# About 2 minutes on 2 cores. Ends by checking that the guard is on (exit 1 if not).
set -euo pipefail

venv=${1:?usage: $0 VENV}
venv=$(cd "$venv" && pwd)
py="$venv/bin/python"
[ -x "$py" ] || { echo "$venv is not a venv (no bin/python)" >&2; exit 2; }
for tool in cmake g++ make pkg-config; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install cmake g++ make pkg-config)" >&2; exit 2; }
done
pkg-config --exists libsodium || { echo "needs libsodium-dev (CURVE)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

if [ -n "${LIBZMQ_SRC:-}" ]; then
    tar xzf "$LIBZMQ_SRC"
else
    if ! apt-get source --download-only zeromq3 >apt.log 2>&1; then
        cat apt.log >&2
        echo "apt-get source zeromq3 failed: add a deb-src entry (see this script's header) and run" \
             "apt-get update, or set LIBZMQ_SRC to a libzmq 4.3.x source tarball" >&2
        exit 2
    fi
    tar xzf zeromq3_*.orig.tar.gz
    mkdir deb && tar xJf zeromq3_*.debian.tar.xz -C deb
fi
src=$(find . -maxdepth 1 -type d \( -name 'libzmq-*' -o -name 'zeromq-*' \) | head -n 1)
[ -n "$src" ] || { echo "no libzmq source directory in the tarball" >&2; exit 2; }
if [ -f deb/debian/patches/series ]; then
    while read -r patch; do
        case "$patch" in ''|'#'*) continue ;; esac
        patch -d "$src" -p1 -s < "deb/debian/patches/$patch"
    done < deb/debian/patches/series
fi

cmake -S "$src" -B build -DCMAKE_BUILD_TYPE=Release -DENABLE_DRAFTS=ON -DWITH_LIBSODIUM=ON \
    -DENABLE_CURVE=ON -DBUILD_TESTS=OFF -DBUILD_STATIC=OFF -DBUILD_SHARED=ON -DWITH_DOC=OFF \
    -DWITH_DOCS=OFF -DWITH_PERF_TOOL=OFF -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_INSTALL_LIBDIR=lib >cmake.log
make -C build -j "$(nproc)" >make.log 2>&1 || { tail -n 40 make.log >&2; exit 1; }
make -C build install >install.log

# --no-cache-dir: a pyzmq wheel pip built and cached for another venv links to that venv's libzmq.
version=${PYZMQ_VERSION:-$("$py" -c 'import zmq; print(zmq.__version__)' 2>/dev/null || echo 27.3.0)}
ZMQ_PREFIX="$venv" ZMQ_DRAFT_API=1 "$venv/bin/pip" install --quiet --force-reinstall --no-deps --no-cache-dir \
    --no-binary pyzmq "pyzmq==$version"

"$py" - <<'EOF'
import sys
import zmq
print(f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, draft API: {zmq.has('draft')}")
try:
    from raftkv.wire import door_hardening
except ImportError:  # raftkv not installed yet (or one without the guard): check the option itself
    with zmq.Context() as ctx, ctx.socket(zmq.ROUTER) as s:
        s.setsockopt(zmq.IN_BATCH_SIZE, 7)
    print("ZMQ_IN_BATCH_SIZE is settable (install raftkv into this venv; its start-up log says whether the doors are hardened)")
    sys.exit(0)
print(door_hardening.describe())
sys.exit(0 if door_hardening.available() else 1)
EOF
