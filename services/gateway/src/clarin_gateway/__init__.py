"""Clarin gateway service."""
