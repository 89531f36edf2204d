"""Forwarding of ``/api/*`` to the owning service."""
