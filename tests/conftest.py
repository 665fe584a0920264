"""Shared pytest set-up: fixtures for real peers live in ``tests/fixtures/`` as plugins."""

pytest_plugins = [
    "fixtures.database",
    "fixtures.peers",
]
