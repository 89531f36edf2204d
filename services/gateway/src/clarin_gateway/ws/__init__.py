"""The WebSocket hub: NATS events to the browsers of their account."""
