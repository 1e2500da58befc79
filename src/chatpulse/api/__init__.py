"""chatpulse api service."""
