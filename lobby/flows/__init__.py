"""The request flows beside the handler, which holds what they share.

- `joining`: `join` and `resume`, the requests that need the media server;
- `moderation`: a moderator's `kick`, `close_room` and `lock_room`;
- `chat`: a room's messages and their history;
- `callstates`: who is really in each call, from the media server's webhooks and lists.
"""
