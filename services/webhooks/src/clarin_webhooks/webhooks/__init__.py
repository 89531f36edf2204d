"""Webhooks of an account and the log of their deliveries."""
