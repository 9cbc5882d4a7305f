"""The votes table, in any database SQLAlchemy Core reaches (SQLite by default, PostgreSQL for real studies).

Each vote is one row, committed (and on SQLite fsynced, in WAL mode) before
the request that brought it returns, so a killed server loses no answered vote.
A unique constraint on (session, item) makes "one vote per rater and item" hold
in the database itself, across restarts and server processes.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    exc,
    inspect,
    make_url,
    select,
)

from colorray.judge.stats import Vote

DEFAULT_DB = "sqlite:///judge.sqlite"
EXPORT_COLUMNS = ("id", "created_at", "session", "task", "item", "photo", "system", "other_system",
                  "answer", "response_ms")

metadata = MetaData()
votes_table = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("session", String(64), nullable=False),
    Column("task", String(16), nullable=False),
    Column("item", String(16), nullable=False),
    Column("photo", Text, nullable=False),
    Column("system", Text, nullable=False),  # pairwise: the system shown on the left
    Column("other_system", Text),  # pairwise: the system shown on the right
    Column("answer", String(8), nullable=False),
    Column("response_ms", Integer, nullable=False),
    UniqueConstraint("session", "item", name="one_vote_per_session_and_item"),
)


class StoreError(RuntimeError):
    """A database that cannot be opened or used; the message names it (password hidden)."""


class DuplicateVote(ValueError):
    """This session has already voted on this item."""


@dataclass(frozen=True)
class VoteRecord:
    session: str
    task: str
    item: str
    photo: str
    system: str
    other_system: str | None
    answer: str
    response_ms: int


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine

    @property
    def name(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def add(self, vote: VoteRecord) -> None:
        """Insert and commit one vote; ``DuplicateVote`` if the session already voted on the item."""
        row = dict(dataclasses.asdict(vote), created_at=datetime.datetime.now(datetime.timezone.utc))
        try:
            with self.engine.begin() as connection:
                connection.execute(votes_table.insert().values(**row))
        except exc.IntegrityError:
            raise DuplicateVote(f"session already voted on item {vote.item}") from None

    def rated_items(self, session: str) -> set[str]:
        query = select(votes_table.c.item).where(votes_table.c.session == session)
        with self.engine.connect() as connection:
            return set(connection.scalars(query))

    def export_rows(self) -> list[dict]:
        """Every vote, oldest first, as plain values (timestamps as ISO 8601 UTC strings)."""
        query = select(*(votes_table.c[name] for name in EXPORT_COLUMNS)).order_by(votes_table.c.id)
        with self.engine.connect() as connection:
            return [dict(row._mapping, created_at=_utc_text(row.created_at)) for row in connection.execute(query)]

    def votes(self) -> list[Vote]:
        query = select(votes_table.c.task, votes_table.c.session, votes_table.c.system,
                       votes_table.c.other_system, votes_table.c.answer)
        with self.engine.connect() as connection:
            return [Vote(*row) for row in connection.execute(query)]


def _utc_text(moment: datetime.datetime) -> str:
    if moment.tzinfo is None:  # SQLite keeps no zone; we only ever write UTC
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.isoformat()


def open_store(url: str, create: bool = True) -> Store:
    """Connect to ``url`` and make sure the votes table exists (``create``) or is there (not ``create``)."""
    engine = _engine(url, create)
    try:
        if create:
            metadata.create_all(engine)
        elif not inspect(engine).has_table(votes_table.name):
            raise StoreError(f"no votes table in {_shown(url)}: is this a judge database?")
    except exc.SQLAlchemyError as error:
        raise StoreError(f"cannot use database {_shown(url)}: {_first_line(error)}") from None
    return Store(engine)


def _engine(url: str, create: bool) -> Engine:
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            _check_sqlite_file(parsed.database, create, url)
        engine = create_engine(parsed, connect_args={"timeout": 30} if parsed.get_backend_name() == "sqlite" else {})
    except exc.ArgumentError as error:
        raise StoreError(f"bad database URL {url!r}: {_first_line(error)}") from None
    except (exc.NoSuchModuleError, ImportError) as error:
        raise StoreError(f"no database driver for {_shown(url)}: {_first_line(error)}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_settings)
    return engine


def _check_sqlite_file(database: str | None, create: bool, url: str) -> None:
    if not database or database == ":memory:":
        raise StoreError(f"SQLite URL {url!r} names no file: votes must outlive the server, "
                         "use e.g. sqlite:///judge.sqlite")
    path = Path(database)
    if create and not path.parent.is_dir():
        raise StoreError(f"folder of the SQLite database not found: {path.parent}")
    if not create and not path.is_file():
        raise StoreError(f"no votes database at {path}")


def _sqlite_settings(connection, _record) -> None:
    """WAL (readers never block the writer), an fsync per commit, and waiting instead of failing on a lock."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return repr(url)


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
