"""Turning application events into signed HTTP POSTs: the consumer that records one
delivery per (webhook, event), and the dispatcher that sends and retries them."""
