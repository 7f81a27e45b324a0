"""Data the package reads at run time, found inside the package (importlib.resources).

    MIGRATIONS          the schema migrations, NNN_name.sql (sql/ at the top of the repo)
    TOPIC_DECLARATIONS  the topics and their settings (topics/topics.json)

Users look for sql/ and topics/ at the top of the repo, so the files live there; the package
holds links to them (cerebelum/_data/sql, cerebelum/_data/topics) and a wheel copies the files
in (pyproject.toml's package-data). A checkout, an editable install, a wheel and a Docker image
all read them through these two names, one way.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

_DATA = resources.files("cerebelum").joinpath("_data")

MIGRATIONS: Traversable = _DATA.joinpath("sql")
TOPIC_DECLARATIONS: Traversable = _DATA.joinpath("topics", "topics.json")
