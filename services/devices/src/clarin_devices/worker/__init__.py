"""Device worker: holds WhatsApp sessions for the devices it owns."""
