"""What a participant sends into its call: camera, microphone, a shared screen.

The page says so itself (the `media` request): the media servers' webhooks do
not tell a muted microphone or a screen share, and peer-to-peer calls have no
server at all. The lobby keeps the latest report on the participant so that
every page (its chips, its tiles) shows the same muted and sharing marks, and
a page that joins later learns them from `welcome` and `joined`.

Pure: stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FIELDS = ("camera", "microphone", "screen")
VIEWERS_SEND_NOTHING = "Viewers watch and listen: they send no camera, microphone or screen."


@dataclass(frozen=True, slots=True)
class MediaState:
    camera: bool = False
    microphone: bool = False
    screen: bool = False

    @property
    def sends(self) -> bool:
        """Whether anything goes out at all (a viewer may send nothing)."""
        return self.camera or self.microphone or self.screen


def check(frame: dict[str, Any]) -> MediaState | str:
    """The report in a `media` frame, or why it is not one (a sentence)."""
    camera, microphone, screen = (frame.get(name) for name in FIELDS)
    if (
        not isinstance(camera, bool)
        or not isinstance(microphone, bool)
        or not isinstance(screen, bool)
    ):
        return "'media' needs booleans 'camera', 'microphone' and 'screen'."
    return MediaState(camera=camera, microphone=microphone, screen=screen)


def from_json(value: object) -> MediaState | None:
    """A `MediaState` from its JSON form (a log entry, a snapshot); None stays None."""
    if value is None:
        return None
    if isinstance(value, MediaState):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"not a media state: {value!r:.100}")
    return MediaState(**{name: bool(value[name]) for name in FIELDS})


def to_json(media: MediaState | None) -> dict[str, bool] | None:
    if media is None:
        return None
    return {"camera": media.camera, "microphone": media.microphone, "screen": media.screen}
