"""PostgreSQL: schema migrations (`sql/`) and the connection pool."""

from cerebelum.db.migrate import MigrationError, applied_migrations, connect_pool, migrate

__all__ = ["MigrationError", "applied_migrations", "connect_pool", "migrate"]
