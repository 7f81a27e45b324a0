"""Install the peers bench/compare runs, at their pinned versions (one command, idempotent):

    python -m bench.compare.install

    1. pip: this checkout with its `bench` and `compare` extras (pyproject.toml pins restate-sdk,
       hypercorn, dbos; matplotlib for the plot) into the running interpreter's environment;
    2. npm: the Restate server, pinned with its integrity hashes in bench/compare/restate/
       (package.json, package-lock.json), installed with `npm ci --ignore-scripts` (no install
       scripts: the package's only one is a download-counter ping) under .cache/compare/restate.
PostgreSQL for DBOS needs nothing new: bench/compare starts a second server with the same
binaries Cerebelum's dev services use.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from bench.common.base import ROOT, say
from bench.compare.engines.restate import NPM_PREFIX, server_binary

PINNED = ROOT / "bench" / "compare" / "restate"


def main() -> None:
    say("pip: installing the bench and compare extras")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[bench,compare]"], check=True
    )
    if shutil.which("npm") is None:
        raise SystemExit("npm is not installed (apt-get install nodejs npm)")
    NPM_PREFIX.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PINNED / name, NPM_PREFIX / name)
    say(f"npm: installing the Restate server into {NPM_PREFIX.relative_to(ROOT)}")
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(NPM_PREFIX)],
        check=True,
    )
    version = subprocess.run(
        [str(server_binary()), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    say(f"installed: {version}; run `python -m bench.compare --help`")


if __name__ == "__main__":
    main()
