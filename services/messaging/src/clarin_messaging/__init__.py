"""Clarin messaging service."""
