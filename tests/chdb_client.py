"""An in-process stand-in for ``clickhouse_driver.Client`` backed by chdb (current ClickHouse).

Only ClickHouse 18.16 can be installed as a server here, so the SQL this library generates for
current servers (``DateTime64`` columns, TTL) is checked by running it in chdb, a real
ClickHouse engine embedded in Python.  The client renders native-insert data as ``VALUES``
literals with the backend's own escaping and decodes typed JSON output.

One engine serves the whole process (chdb allows one per process); each client keeps to the
database its URL names, switching the engine's current database before its queries.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from composite_store.backends.clickhouse import escape

#: Host part of the URLs that name the in-process engine (``clickhouse://default:@in-process/<db>``).
IN_PROCESS_HOST = "in-process"
#: URL given to stores on the in-process engine (never dialled: their client is chdb's).
CHDB_URL = f"clickhouse://default:@{IN_PROCESS_HOST}/default"

_LOCK = threading.Lock()
#: The engine's current database (``USE`` holds for the whole engine, so it is tracked here).
_current_database = ["default"]


def _decode(value: Any, type_: str) -> Any:
    if value is None:
        return None
    if type_.startswith("Nullable("):
        return _decode(value, type_[len("Nullable("):-1])
    if type_.startswith(("Int", "UInt")):
        return int(value)
    if type_.startswith("Float"):
        return float(value)
    if type_.startswith("DateTime"):
        text = value if "." in value else value + ".000"
        return datetime.strptime(text[:23], "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)
    return value


class ChdbClient:
    """The part of ``clickhouse_driver.Client`` the backend uses, over one chdb session."""

    def __init__(self, session: Any, *, database: str = "default", **_: Any) -> None:
        self.session = session
        self.database = database
        self.connection = SimpleNamespace(connect=lambda: None)

    def _query(self, query: str, *args: Any) -> Any:
        """Run ``query`` in this client's database (the caller holds ``_LOCK``); the engine's
        errors are raised as the driver raises a server's (``ServerException`` with its code)."""
        from clickhouse_driver.errors import ServerException

        try:
            if _current_database[0] != self.database:
                self.session.query(f"USE `{self.database}`")
                _current_database[0] = self.database
            return self.session.query(query, *args)
        except Exception as exc:  # chdb raises one class for every server error
            code = re.match(r"Code: (\d+)", str(exc))
            if code is None:
                raise
            raise ServerException(str(exc), code=int(code.group(1))) from exc

    def execute(self, query: str, params: Any = None, with_column_types: bool = False, **_: Any) -> Any:
        if isinstance(params, list):  # a native insert: data rows after "... VALUES"
            if params:
                values = ", ".join("(" + ", ".join(escape(v) for v in row) + ")" for row in params)
                with _LOCK:
                    self._query(f"{query} {values}")
            return []
        if isinstance(params, dict):
            query = query % {key: escape(value) for key, value in params.items()}
        with _LOCK:
            result = self._query(query, "JSONCompactEachRowWithNamesAndTypes")
        lines = [json.loads(line) for line in result.bytes().decode().splitlines() if line.strip()]
        if not lines:
            return ([], []) if with_column_types else []
        names, types, rows = lines[0], lines[1], lines[2:]
        rows = [tuple(_decode(v, t) for v, t in zip(row, types)) for row in rows]
        return (rows, list(zip(names, types))) if with_column_types else rows

    def disconnect(self) -> None:
        pass
