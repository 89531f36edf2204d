"""Pipeline stages of an account."""
