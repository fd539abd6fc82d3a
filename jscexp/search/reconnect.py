"""An Optuna RDB storage that rides out a database restart.

``pool_pre_ping`` makes SQLAlchemy test a pooled connection before using it, so connections
a restarted PostgreSQL dropped are replaced instead of failing the next call. While the
server is down, each storage call is retried with backoff for ``patience`` seconds; only an
outage longer than that reaches the sweeper (its trials end FAIL with the error). A retried
write is safe: the failed transaction was rolled back.
"""

from __future__ import annotations

import logging
import time

from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage, RDBStorage
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, PendingRollbackError

log = logging.getLogger(__name__)
_OUTAGE = (StorageInternalError, DBAPIError)


def reconnecting_rdb(url: str, patience: float = 120.0) -> BaseStorage:
    # abstract methods filled in below the class: mypy cannot see them
    return Reconnecting(RDBStorage(url, engine_kwargs={"pool_pre_ping": True}), patience)  # type: ignore[abstract]


class Reconnecting(BaseStorage):
    """Every storage call of ``inner``, retried while the database does not answer."""

    def __init__(self, inner: RDBStorage, patience: float):
        self.inner, self.patience = inner, patience

    def _retry(self, name: str, *args, **kwargs):
        deadline, wait = time.monotonic() + self.patience, 0.25
        while True:
            try:
                return getattr(self.inner, name)(*args, **kwargs)
            except _OUTAGE as err:
                if not _is_outage(err) or time.monotonic() + wait > deadline:
                    raise
                log.warning(f"Optuna storage not answering ({type(err).__name__}); retrying in {wait:.1f} s")
                time.sleep(wait)
                wait = min(wait * 2, 8.0)

    def __getattr__(self, name: str):  # RDBStorage's own extras (url, engine, ...)
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def _is_outage(err: Exception) -> bool:
    """A lost or refused connection — refused, reset, closed under a call, or a session left
    to roll back by one: what a restarting PostgreSQL leaves behind; not a constraint
    or a bad value, which a retry repeats."""

    cause = err.__cause__ if isinstance(err, StorageInternalError) else err
    lost = (OperationalError, InterfaceError, DisconnectionError, PendingRollbackError)
    return isinstance(cause, lost) or bool(getattr(cause, "connection_invalidated", False))


def _forward(name: str):
    def method(self, *args, **kwargs):
        return self._retry(name, *args, **kwargs)

    method.__name__ = name
    return method


for _name in sorted(BaseStorage.__abstractmethods__):  # every call a study makes goes through one
    setattr(Reconnecting, _name, _forward(_name))
Reconnecting.__abstractmethods__ = frozenset()
