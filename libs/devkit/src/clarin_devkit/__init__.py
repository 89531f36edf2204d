"""Clarin's development tooling: never installed in a production image."""
