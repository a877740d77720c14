#!/usr/bin/env bash
# mypy over the package as it is installed: setup.cfg maps actors/, wire/ and storage/ into
# raftkv.*, which mypy cannot follow through an editable install, so the same layout is built
# from symbolic links in a temporary directory and checked there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/raftkv"
for f in "$root"/raftkv/*; do ln -s "$f" "$tree/raftkv/"; done
for pkg in actors wire storage; do ln -s "$root/$pkg" "$tree/raftkv/$pkg"; done
cd "$tree"
mypy --config-file "$root/pyproject.toml" -p raftkv
