"""The pure rules: presence, the wire format, signalling checks, routing, limits.

Stdlib only: no sockets, no asyncio, no framework, and nothing from the web,
media or storage parts (`tests/test_layout.py` checks). Everything here is
tested without a socket.
"""
