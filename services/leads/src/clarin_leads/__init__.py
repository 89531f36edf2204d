"""Clarin leads service."""
