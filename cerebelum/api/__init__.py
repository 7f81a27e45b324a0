"""The HTTP API (FastAPI): commands to Kafka, queries from PostgreSQL."""

from cerebelum.api.app import create_app

__all__ = ["create_app"]
