"""Clarin webhooks service: endpoints of other teams receive the application events."""
