"""chatpulse: real-time Twitch chat analytics on Kafka, Quix Streams and Cassandra."""

__version__ = "0.1.0"
__all__ = ["__version__"]
