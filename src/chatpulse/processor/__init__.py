"""chatpulse processor service."""
