"""The media side: the `MediaBackend` seam and its back ends (OpenVidu 2, peer to peer),
the breaker in front of them, and `Calls`, which hands out grants and retries clean-up.

Back ends take their settings as arguments; `lobby.app.media_backend` builds the
one the settings name.
"""
