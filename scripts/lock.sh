#!/usr/bin/env bash
# Refresh requirements.lock: every transitive dependency of the image (pyproject's dependencies
# and the `oidc` and `tracing` extras), pinned, with the hashes of every file PyPI has for each pin, so
# `pip install --require-hashes -r requirements.lock` in the Dockerfile installs exactly these
# bytes. Run after changing a pin in pyproject.toml (tests/unit/test_lock.py fails until then).
#   bash scripts/lock.sh            rewrite requirements.lock
#   bash scripts/lock.sh --upgrade  also move unpinned transitive dependencies to their newest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# uv resolves in seconds and writes pip's hash format; pinned so two runs agree on the format.
UV_VERSION=0.13.8
if ! .venv/bin/uv --version 2>/dev/null | grep -q "^uv $UV_VERSION "; then
    .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

# --universal: one file valid on every platform the image is built for (amd64, arm64), with
# environment markers where a dependency differs; --python-version: the image's Python.
.venv/bin/uv pip compile pyproject.toml --extra oidc --extra tracing \
    --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "bash scripts/lock.sh" \
    --output-file requirements.lock "$@"
