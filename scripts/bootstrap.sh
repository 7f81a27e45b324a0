#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for Cerebelum, then start the local services.
# Idempotent: a second run only checks that everything is there and running.
#   1. the .venv virtualenv, with `pip install -e '.[test]'` when pyproject.toml changed;
#   2. java and mvn, to run Kafka from Maven Central's jars; chromium, for the dashboard's test;
#   3. `python -m cerebelum.cli.dev up` (which also installs PostgreSQL if it is missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        echo "apt-get update..."
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        apt_updated=1
    fi
    echo "apt-get install $*..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# 1. The virtualenv and the package.
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    echo "creating .venv..."
    python3 -m venv .venv
fi
stamp=.venv/.cerebelum-pyproject.sha256
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
    echo "installing the package and its test dependencies (pyproject.toml changed)..."
    # uv installs the same pinned packages as pip in about a fifth of the time (measured: 12 s
    # against 56 s for '.[test]'); pip alone if uv cannot be had.
    if .venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9; then
        .venv/bin/python -m uv pip install -q --python .venv/bin/python -e '.[test]'
    else
        .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    fi
    echo "$wanted" >"$stamp"
fi

# 2. Java (Kafka 4.x needs 17+) and Maven (fetches the Kafka jars once); chromium for the
#    dashboard's browser test (Playwright drives it; it downloads no browser of its own).
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
[ -x /usr/lib/chromium/chromium ] || command -v chromium >/dev/null || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# 3. Kafka and PostgreSQL.
exec .venv/bin/python -m cerebelum.cli.dev up
