"""Test helper: the scalar tags in the tensorboard event files under a folder."""
from __future__ import annotations

from pathlib import Path


def scalar_tags(folder: Path) -> set[str]:
    """Every scalar tag logged in ``folder``'s event files (searched recursively)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: set[str] = set()
    for events in Path(folder).rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags
