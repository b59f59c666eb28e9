"""Reads of a shard with read replicas: balanced over its members, carried on by another member when
one is down or slow.

Each read goes to the next member in turn (primary and replicas alike). It is sent without Ray's
retries, so a member that is dead or restarting fails at once instead of holding the read until it
is back; the read then goes to the next member, and the failed one is passed over for
:data:`SUSPECT_S`. A member that has not answered within ``hedge_after_s`` (one restarting, or on a
node that is gone but not yet declared dead, holds calls that long) gets a second member asked beside
it, the first answer wins, and the slow one is passed over as well. Only when every member failed is the read sent with retries to the primary, which waits for
it to come back, as a shard without replicas does.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import ray

log = logging.getLogger(__name__)

SUSPECT_S = 5.0        # a member whose call failed gets no reads for this long (unless all others fail)
HEDGE_AFTER_S = 1.0    # a read still unanswered after this long is also sent to the next member
UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)


class MemberReads:
    """The members (primary first, then its replicas) of one shard, read in turn."""

    def __init__(self, members: list, hedge_after_s: float = HEDGE_AFTER_S):
        self.members = members
        self.hedge_after_s = hedge_after_s
        self._turn = itertools.count()
        self._suspect_until = [0.0] * len(members)

    def _order(self) -> list[int]:
        """Member indexes to try: starting at this read's turn, members that failed lately last."""
        start = next(self._turn) % len(self.members)
        turn = [(start + i) % len(self.members) for i in range(len(self.members))]
        now = time.monotonic()
        return sorted(turn, key=lambda m: self._suspect_until[m] > now)  # stable: the turn order otherwise

    async def read(self, method: str, *args):
        """The result of ``method(*args)`` from the first member that answers."""
        pending: dict[asyncio.Task, int] = {}
        try:
            for member in self._order():
                call = asyncio.ensure_future(self._call(member, method, args))
                pending[call] = member
                outcome = await self._first(pending, self.hedge_after_s)
                if outcome is not None:
                    return outcome[0]
                if call in pending:  # slow (restarting, or its node is gone): pass it over for a while too
                    self._suspect_until[member] = time.monotonic() + SUSPECT_S
            while pending:
                outcome = await self._first(pending, None)
                if outcome is not None:
                    return outcome[0]
        finally:
            for task in pending:
                task.cancel()
        log.warning("every member of a shard failed a %s; asking the primary until it is back", method)
        return await getattr(self.members[0], method).remote(*args)

    async def _call(self, member: int, method: str, args: tuple):
        return await getattr(self.members[member], method).options(max_task_retries=0).remote(*args)

    async def _first(self, pending: dict, timeout: float | None) -> tuple | None:
        """Wait up to ``timeout`` for a pending call to succeed: ``(result,)``, or None when none did
        (the failed ones are dropped from ``pending`` and their members passed over for a while)."""
        while pending:
            done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                return None
            for task in done:
                member = pending.pop(task)
                error = task.exception()
                if error is None:
                    return (task.result(),)
                if not isinstance(error, UNAVAILABLE):
                    raise error  # the read itself failed (bad input): every member would say the same
                self._suspect_until[member] = time.monotonic() + SUSPECT_S
                log.info("shard member %d is unavailable (%s); reading from another", member, type(error).__name__)
        return None
