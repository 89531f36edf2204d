"""Leads: CRUD, filters, and leads born from WhatsApp messages."""
