"""A local server speaking Twitch's IRC dialect: simulated chat or capture replay."""
