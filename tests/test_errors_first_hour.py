"""Errors a new user meets in the first hour say what to do (issue 16).

* a missing driver names the ``pip install 'composite-store[<extra>]'`` command, in one line;
* ``get_store`` with a key that is no domain key is a ``ValidationError`` (see also test_composite);
* "cannot connect" and "connected, but the server refused the database, role or password" are told
  apart, with the password masked; a SQLite file that cannot be opened shows its absolute path and,
  for ``sqlite:///tmp/x.db``, the four-slash form;
* ``-vv`` shows the library's own log lines, never a driver's traceback.

Real servers only: the session's PostgreSQL and throwaway ClickHouse, and a private PostgreSQL
cluster with password logins (from the reliability suite) for the wrong-password case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from composite_store import BackendUnavailableError, StorageError, ValidationError
from composite_store.backends.clickhouse import parse_clickhouse_url
from composite_store.clickhouse import ClickHouseStore
from composite_store.postgres import PostgresStore
from composite_store.sqlite import SQLiteStore
from tests.reliability.conftest import postgres_cluster  # noqa: F401 - a fixture used below
from tests.reliability.servers import APP_PASSWORD

CLOSED_PORT_PG = "postgresql://u:secret-16@127.0.0.1:1/db"
CLOSED_PORT_CLICKHOUSE = "clickhouse://u:secret-16@127.0.0.1:1/default"


def with_url_parts(url: str, *, userinfo: str | None = None, database: str | None = None) -> str:
    """``url`` with another ``user[:password]`` and/or database."""
    parts = urlsplit(url)
    netloc = parts.netloc if userinfo is None else f"{userinfo}@{parts.netloc.rsplit('@', 1)[-1]}"
    path = parts.path if database is None else f"/{database}"
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


def run_cli(*args: str, prelude: str = "", cwd: str | None = None) -> subprocess.CompletedProcess:
    """``composite-store <args>`` in a child Python that first runs ``prelude``."""
    code = f"{prelude}\nfrom composite_store.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env=dict(os.environ))


def block_import(module: str) -> str:
    """A prelude that makes ``import <module>`` fail, as on an install without that extra."""
    return f"import sys\nsys.modules[{module!r}] = None"


def init_error(store) -> BackendUnavailableError:
    with store, pytest.raises(BackendUnavailableError) as info:
        store.init()
    return info.value


# ---------------------------------------------------------------------------- missing driver

@pytest.mark.parametrize("module, make_store, error_id, extra", [
    ("clickhouse_driver", lambda: ClickHouseStore(url=CLOSED_PORT_CLICKHOUSE), "STORAGE_CLICKHOUSE_INIT_FAILED",
     "clickhouse"),
    ("psycopg2", lambda: PostgresStore(connection_string=CLOSED_PORT_PG), "STORAGE_PG_INIT_FAILED", "postgres"),
])
def test_a_missing_driver_names_the_extra_to_install(monkeypatch, module, make_store, error_id, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(StorageError) as info:
        make_store()
    error = info.value
    assert type(error) is StorageError
    assert error.id == error_id and error.domain is None
    assert f"pip install 'composite-store[{extra}]'" in str(error)
    assert error.details == {"code": "DRIVER_MISSING", "driver": module, "extra": extra}
    assert error.__cause__ is None and error.__suppress_context__  # one traceback, not a chain


@pytest.mark.parametrize("module, url, error_id, extra", [
    ("clickhouse_driver", CLOSED_PORT_CLICKHOUSE, "STORAGE_CLICKHOUSE_INIT_FAILED", "clickhouse"),
    ("psycopg2", CLOSED_PORT_PG, "STORAGE_PG_INIT_FAILED", "postgres"),
])
def test_cli_init_without_the_driver_prints_one_line_naming_the_extra(module, url, error_id, extra):
    completed = run_cli("init", "--default", url, prelude=block_import(module))
    assert completed.returncode == 1
    assert completed.stdout == ""
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"{error_id}: The {module} package cannot be imported")
    assert lines[0].endswith(f"install it with: pip install 'composite-store[{extra}]'")
    assert "secret-16" not in completed.stderr


def test_store_init_without_the_driver_shows_one_traceback():
    code = f"{block_import('clickhouse_driver')}\nfrom composite_store import CompositeStore\n" \
           f"CompositeStore.from_urls(default={CLOSED_PORT_CLICKHOUSE!r}).init()"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 1
    assert completed.stderr.count("Traceback") == 1, completed.stderr
    assert completed.stderr.rstrip().splitlines()[-1].startswith("composite_store.errors.StorageError: ")
    assert "pip install 'composite-store[clickhouse]'" in completed.stderr


def test_a_backend_whose_driver_is_missing_leaves_the_others_working(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "clickhouse_driver", None)
    with SQLiteStore(url=f"sqlite:///{tmp_path}/db.sqlite") as store:
        store.init()
        assert store.get_store("memory").list_threads().total == 0


# ---------------------------------------------------------------------------- get_store

def test_clickhouse_store_get_store_rule():
    store = ClickHouseStore(url=CLOSED_PORT_CLICKHOUSE)  # no connection is made
    assert store.get_store("agents") is None  # a domain ClickHouse does not hold
    with pytest.raises(ValidationError) as info:
        store.get_store("score")
    assert info.value.id == "STORAGE_CLICKHOUSE_GET_STORE_INVALID_INPUT"
    assert "did you mean 'scores'?" in str(info.value)


# ---------------------------------------------------------------------------- PostgreSQL

def test_postgres_nothing_listening_is_cannot_connect():
    error = init_error(PostgresStore(connection_string=CLOSED_PORT_PG))
    assert error.details["code"] == "CANNOT_CONNECT"
    assert str(error).startswith("Cannot reach database postgresql://u:***@127.0.0.1:1/db: ")
    assert "secret-16" not in str(error)


def test_postgres_unknown_host_is_cannot_connect():
    error = init_error(PostgresStore(connection_string="postgresql://u:secret-16@no-such-host.invalid/db"))
    assert error.details["code"] == "CANNOT_CONNECT"
    assert str(error).startswith("Cannot reach database postgresql://u:***@no-such-host.invalid/db: ")


def test_postgres_unknown_database_is_a_refused_login(postgres_url):
    name = f"no_such_db_{uuid.uuid4().hex[:8]}"
    url = with_url_parts(postgres_url, database=name)
    error = init_error(PostgresStore(connection_string=url))
    assert error.id == "STORAGE_PG_INIT_FAILED"
    assert error.details["code"] == "LOGIN_REFUSED"
    assert str(error) == f'Connected to {url}, but the server refused the login: database "{name}" does not exist'


def test_postgres_unknown_role_is_a_refused_login_with_the_password_masked(postgres_url):
    url = with_url_parts(postgres_url, userinfo="no_such_role_16:secret-16")
    error = init_error(PostgresStore(connection_string=url))
    assert error.details["code"] == "LOGIN_REFUSED"
    assert str(error).startswith(f"Connected to {with_url_parts(postgres_url, userinfo='no_such_role_16:***')}, "
                                 "but the server refused the login: ")
    # trust authentication answers "role does not exist"; password authentication may answer first
    assert 'role "no_such_role_16" does not exist' in str(error) or "authentication failed" in str(error)
    assert "secret-16" not in str(error)


def test_postgres_wrong_password_is_a_refused_login(postgres_cluster):  # noqa: F811 - the fixture
    url = postgres_cluster.url.replace(APP_PASSWORD, "wrong-secret-16")
    error = init_error(PostgresStore(connection_string=url))
    assert error.details["code"] == "LOGIN_REFUSED"
    assert str(error).endswith('but the server refused the login: password authentication failed for user "cs_app"')
    assert "wrong-secret-16" not in str(error) and APP_PASSWORD not in str(error)


# ---------------------------------------------------------------------------- ClickHouse

def test_clickhouse_nothing_listening_is_cannot_connect():
    error = init_error(ClickHouseStore(url=CLOSED_PORT_CLICKHOUSE))
    assert error.details["code"] == "CANNOT_CONNECT"
    assert str(error).startswith("Cannot reach database clickhouse://u:***@127.0.0.1:1/default: ")


def test_clickhouse_unknown_database_is_a_refused_login(clickhouse_url):
    name = f"no_such_db_{uuid.uuid4().hex[:8]}"
    url = with_url_parts(clickhouse_url, database=name)
    error = init_error(ClickHouseStore(url=url))
    assert error.id == "STORAGE_CLICKHOUSE_INIT_FAILED"
    assert error.details["code"] == "LOGIN_REFUSED"
    assert str(error).startswith(f"Connected to {error.details['url']}, but the server refused the login: ")
    assert name in str(error) and str(error).endswith("(code 81)")
    assert "Stack trace" not in str(error)


@pytest.mark.parametrize("userinfo", ["no_such_user_16:secret-16", "default:secret-16"])
def test_clickhouse_unknown_user_or_wrong_password_is_a_refused_login(clickhouse_url, userinfo):
    error = init_error(ClickHouseStore(url=with_url_parts(clickhouse_url, userinfo=userinfo)))
    assert error.details["code"] == "LOGIN_REFUSED"
    assert str(error).startswith(f"Connected to {with_url_parts(clickhouse_url, userinfo=userinfo.split(':')[0] + ':***')}, "
                                 "but the server refused the login: ")
    assert "secret-16" not in str(error)


def test_clickhouse_store_refused_for_a_missing_database_works_once_it_exists(clickhouse_url):
    """A refused login leaves no half-open connection behind: the next call connects again."""
    name = f"created_later_{uuid.uuid4().hex[:8]}"
    store = ClickHouseStore(url=with_url_parts(clickhouse_url, database=name))
    with pytest.raises(BackendUnavailableError):
        store.init()
    from clickhouse_driver import Client

    admin = Client(**parse_clickhouse_url(clickhouse_url))
    admin.execute(f"CREATE DATABASE {name}")
    try:
        with store:
            store.init()
            assert store.get_store("scores").list_scores_by_run_id(run_id="r").total == 0
    finally:
        admin.execute(f"DROP DATABASE {name}")
        admin.disconnect()


# ---------------------------------------------------------------------------- SQLite

def test_sqlite_missing_folder_shows_the_absolute_path(tmp_path):
    path = tmp_path / "missing" / "app.db"
    error = init_error(SQLiteStore(url=f"sqlite:///{path}"))
    assert error.id == "STORAGE_SQLITE_INIT_FAILED"
    assert error.details["path"] == str(path)
    assert str(error) == (f"Cannot open SQLite database sqlite:///{path} at {path}: unable to open database file "
                          f"(the folder {path.parent} does not exist)")


def test_sqlite_three_slashes_before_an_absolute_looking_path_get_the_four_slash_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ./tmp does not exist here, /tmp does
    relative = f"tmp/{uuid.uuid4().hex[:8]}/x.db"
    error = init_error(SQLiteStore(url=f"sqlite:///{relative}"))
    message = str(error)
    assert f" at {tmp_path / relative}: " in message
    assert f"three slashes make the path relative to the current folder {tmp_path}" in message
    assert f"for the absolute path /{relative} write sqlite:////{relative} (four slashes)" in message


def test_sqlite_relative_path_that_does_not_look_absolute_gets_no_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = init_error(SQLiteStore(url="sqlite:///no-such-folder-16/x.db"))
    assert f" at {tmp_path}/no-such-folder-16/x.db: " in str(error)
    assert "four slashes" not in str(error)


def test_cli_prints_the_sqlite_hint_in_one_line(tmp_path):
    completed = run_cli("init", "--default", "sqlite:///tmp/no-such-folder-16/x.db", cwd=str(tmp_path))
    assert completed.returncode == 1
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(f"STORAGE_SQLITE_INIT_FAILED: Cannot open SQLite database sqlite:///tmp/no-such-folder-16"
                               f"/x.db at {tmp_path}/tmp/no-such-folder-16/x.db: ")
    assert lines[0].endswith("write sqlite:////tmp/no-such-folder-16/x.db (four slashes)")


# ---------------------------------------------------------------------------- -vv

def test_vv_logs_the_library_lines_and_still_one_error_line_without_traceback():
    completed = run_cli("-vv", "init", "--default", CLOSED_PORT_CLICKHOUSE)
    assert completed.returncode == 1
    lines = completed.stderr.splitlines()
    assert lines[-1].startswith("STORAGE_CLICKHOUSE_INIT_FAILED: Cannot reach database clickhouse://u:***@")
    assert "DEBUG composite_store.composite: init memory on clickhouse://u:***@127.0.0.1:1/default" in lines
    assert any(line.startswith("DEBUG composite_store: Connecting to clickhouse://u:***@127.0.0.1:1/default failed: ")
               for line in lines)
    assert all(line.startswith("DEBUG composite_store") for line in lines[:-1]), completed.stderr
    assert "Traceback" not in completed.stderr and "clickhouse_driver" not in completed.stderr
    assert "secret-16" not in completed.stderr


def test_vv_on_a_working_database_shows_no_sql(tmp_path):
    completed = run_cli("-vv", "init", "--default", f"sqlite:///{tmp_path}/app.db")
    assert completed.returncode == 0, completed.stderr
    assert "DEBUG composite_store.composite: init memory on sqlite:///" in completed.stderr
    assert "peewee" not in completed.stderr  # peewee logs every statement at DEBUG


def test_vvv_opens_the_drivers_and_peewee_logs(tmp_path):
    completed = run_cli("-vvv", "init", "--default", f"sqlite:///{tmp_path}/app.db")
    assert completed.returncode == 0, completed.stderr
    assert "DEBUG peewee: ('CREATE TABLE IF NOT EXISTS" in completed.stderr


def test_without_v_a_failure_is_one_line():
    completed = run_cli("init", "--default", CLOSED_PORT_CLICKHOUSE)
    assert completed.returncode == 1
    assert len(completed.stderr.splitlines()) == 1, completed.stderr
