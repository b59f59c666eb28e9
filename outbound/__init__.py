"""outbound: where the platform may reach on a caller's behalf, and what of it may be shown.

The lowest layer beside ``facecore`` and ``store`` (no platform imports): video sources, webhooks
and bulk-job inputs and reports are all checked by one :class:`OutboundPolicy`
(:mod:`outbound.policy`), webhooks connect only to addresses it allows (:mod:`outbound.http`), and
credentials in URLs are masked wherever a location is logged, stored as a status or answered
(:mod:`outbound.redact`).
"""

from outbound.policy import OutboundPolicy, OutboundRefused
from outbound.redact import redact

__all__ = ["OutboundPolicy", "OutboundRefused", "redact"]
