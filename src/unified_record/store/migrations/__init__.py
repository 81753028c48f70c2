"""Alembic migrations for the store (a package so wheels ship them)."""
