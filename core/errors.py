"""The one error tree of the console; every layer raises these and the UI shows their message.

CastielError                 base; ``message`` is written for a person to act on
├── NotFound                 the thing asked for does not exist (or is not yours to see)
├── Invalid                  bad input; says what is wrong and what is allowed
├── Forbidden                the acting user may not do this
├── Conflict                 someone changed it first (stale etag), or it already exists
├── QuotaExceeded            over a tenant's quota; the message carries the numbers
├── StoreUnavailable         the store or blob store cannot be reached
└── ConnectorError           raised by connectors; ``kind`` feeds the health model
    ├── ConfigError          needs a person: bad credentials, revoked consent, permission
    ├── TransientError       retry: 5xx, timeouts, dropped connections
    │   └── RateLimited      retry after ``retry_after`` seconds (429)
    └── DataError            one malformed record: skipped and counted, never fatal
"""

from __future__ import annotations


class CastielError(Exception):
    """Base of every error the console raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(CastielError):
    pass


class Invalid(CastielError):
    pass


class Forbidden(CastielError):
    pass


class Conflict(CastielError):
    pass


class QuotaExceeded(CastielError):
    pass


class StoreUnavailable(CastielError):
    pass


class ConnectorError(CastielError):
    kind = "error"


class ConfigError(ConnectorError):
    kind = "config"


class TransientError(ConnectorError):
    kind = "transient"


class RateLimited(TransientError):
    kind = "rate_limited"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DataError(ConnectorError):
    kind = "data"
