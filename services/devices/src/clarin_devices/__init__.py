"""Clarin devices service."""
