"""chatpulse ingest service."""
