"""Errors of the persistence layer.

Each carries a message a user can act on ("application 7 not found", "an application named 'x'
already exists"). The serving layer maps :class:`NotFound` to 404, :class:`Conflict` to 409 and
:class:`InvalidValue` (unknown service type, shards < 1, a name that is blank or not storable text)
to 400, in one place.
"""


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class NotFound(StoreError):
    """The application, service or subject named by the caller does not exist."""


class Conflict(StoreError):
    """The operation would break a uniqueness rule (a duplicate name)."""


class InvalidValue(StoreError, ValueError):
    """An argument the store cannot accept: an unknown service type, a blank name, a NUL character."""
