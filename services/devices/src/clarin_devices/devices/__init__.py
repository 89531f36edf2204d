"""Devices: the linked WhatsApp numbers of an account and their lifecycle."""
