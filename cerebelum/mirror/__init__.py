"""The mirror: cerebelum.events → PostgreSQL (`events` and `executions`), idempotently."""

from cerebelum.mirror.mirror import Mirror, MirrorStats

__all__ = ["Mirror", "MirrorStats"]
