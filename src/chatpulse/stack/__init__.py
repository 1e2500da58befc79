"""chatpulse stack service."""
