"""Where presence lives: one process's memory, or a Redis stream shared by several instances.

`seam.PresenceStore` is the interface; `local.LocalPresence` and `node.RedisPresence`
implement it. Both apply the same `commands` to the same `replica.Replica`, which
wraps the pure `lobby.rules.presence.Presence`. docs/cluster.md explains the design.
"""
