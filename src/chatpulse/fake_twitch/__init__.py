"""A local server speaking Twitch's IRC dialect: simulated chat or capture replay."""

from chatpulse.fake_twitch.server import FakeTwitchServer
from chatpulse.fake_twitch.simulate import channel_names, simulate, simulate_channel
from chatpulse.fake_twitch.source import ReplaySource, SimulatedSource

__all__ = [
    "FakeTwitchServer",
    "ReplaySource",
    "SimulatedSource",
    "channel_names",
    "simulate",
    "simulate_channel",
]
