"""Clarin auth service."""
