"""A secret value that never shows in a repr, a str, a log line or a traceback's locals."""

from __future__ import annotations

from pathlib import Path

from cerebelum.errors import ConfigurationError

MASK = "**********"


class Secret:
    """Wraps a password or key: `reveal()` is the one way to read it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:  # pickling would write the value out
        raise TypeError("a Secret is not pickled")


def secret_from(value: str | None, file: str | None, name: str) -> Secret | None:
    """A secret given directly (`name`) or in a file (`name`_FILE, e.g. a Kubernetes secret
    mounted as a file); both at once is an error, since one of them would be ignored."""
    if value and file:
        raise ConfigurationError(f"{name} and {name}_FILE are both set: set one")
    if file:
        try:
            # One trailing newline is how editors and `echo` end a file, not part of the secret.
            return Secret(Path(file).read_text().removesuffix("\n").removesuffix("\r"))
        except OSError as exc:
            raise ConfigurationError(f"{name}_FILE: cannot read {file}: {exc.strerror}") from None
    return Secret(value) if value else None
