"""Clarin leads service: leads, the pipeline, and leads born from WhatsApp."""
