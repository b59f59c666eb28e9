"""Finding and repairing drift between a gallery's subject rows (PostgreSQL) and its faces (shards).

Drift is what an interrupted change leaves: an unfinished delete or rename (its intent row is still
there, see :mod:`store.gallery_intents`), or faces whose subject has no row (an add that raced with
the subject's deletion, or data written before changes were ordered). A repair finishes every
unfinished change, then gives faces without a row their row back, so that they are listed and can
be deleted or renamed like any other subject.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gallery.service_gallery import Gallery
from store.gallery_intents import Intent


@dataclass
class Drift:
    """What a check found; ``consistent`` when nothing."""

    unfinished: list[Intent] = field(default_factory=list)
    faces_without_subject: dict[str, int] = field(default_factory=dict)  # subject -> faces

    @property
    def consistent(self) -> bool:
        return not self.unfinished and not self.faces_without_subject

    def lines(self) -> list[str]:
        """One human-readable line per finding."""
        found = [f"unfinished delete of subject {i.subject!r}" if i.action == "delete"
                 else f"unfinished rename of subject {i.subject!r} to {i.new_name!r}" for i in self.unfinished]
        found += [f"{faces} face(s) of subject {subject!r}, which has no subject row"
                  for subject, faces in sorted(self.faces_without_subject.items())]
        return found


async def check(gallery: Gallery) -> Drift:
    """Compare the gallery's subject rows, unfinished changes and the subjects its shards hold."""
    unfinished = await gallery.intents.pending(gallery.service_id)
    rows = set(await gallery.control.list_subjects(gallery.service_id))
    held = await gallery.shards.subjects()
    return Drift(unfinished, {subject: faces for subject, faces in held.items() if subject not in rows})


async def repair(gallery: Gallery) -> Drift:
    """Finish every unfinished change, then restore the rows of faces without one; returns what was
    found before the repair. Safe to run while the service serves: each step is idempotent."""
    found = await check(gallery)
    for intent in found.unfinished:
        if intent.action == "delete":
            await gallery.shards.delete_subject(intent.subject)
        else:
            await gallery.control.ensure_subjects(gallery.service_id, [intent.new_name])
            await gallery.shards.rename_subject(intent.subject, intent.new_name)
        await gallery.intents.finish(gallery.service_id, intent.subject)
    left = await check(gallery)
    if left.faces_without_subject:
        await gallery.control.ensure_subjects(gallery.service_id, list(left.faces_without_subject))
    return found
