"""Lobby: a realtime lobby server for OpenVidu video calls."""

__version__ = "0.1.0"
