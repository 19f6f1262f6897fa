"""Celery tasks (see the package docstring)."""
