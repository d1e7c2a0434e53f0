"""The sales ledger: one table of stored sales rows and a per-item totals view, in a database chosen by URL.

`SALES_DATABASE_URL` (SQLAlchemy URL) picks the database: by default an
SQLite file under `.run/` (nothing to install), in Kubernetes a Postgres
server (`postgresql+psycopg://user:password@host/db`), so the ledger outlives
the Job's pod and every worker writes the same one. Only SQLAlchemy Core is
used; the two dialects differ in nothing but how the view is (re)created and
how a duplicate is ignored.

Idempotent by message id: a row stored again under the same message id (a
redelivery, a retried batch) is ignored. A row published without a message
id gets no dedupe key (its `message_id` is NULL, and NULLs never conflict):
it is stored each time it is delivered. A delivery tag would be no key
(tags restart on every channel, so a different row would be dropped), and a
hash of the body would merge two genuinely identical sales.

Read the totals with `sqlite3 .run/sales.db 'SELECT * FROM sales_item_totals'`
(or psql on Postgres).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, Text, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite

from common.settings import REPO_ROOT

DEFAULT_URL = f"sqlite:///{REPO_ROOT / '.run' / 'sales.db'}"

metadata = MetaData()
sales_rows = Table(
    "sales_rows",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(255), unique=True, nullable=True),
    Column("sold_on", String(10), nullable=False),
    Column("item", Text, nullable=False),
    # Exact decimal text as computed; the view casts for sums.
    Column("quantity", String(40), nullable=False),
    Column("amount", String(40), nullable=False),
    Column("unit_price", String(40), nullable=False),
)
_TOTALS = """sales_item_totals AS
    SELECT item, COUNT(*) AS row_count, SUM(CAST(quantity AS NUMERIC)) AS quantity,
           ROUND(SUM(CAST(amount AS NUMERIC)), 2) AS amount
    FROM sales_rows GROUP BY item"""
_CREATE_VIEW = {"sqlite": f"CREATE VIEW IF NOT EXISTS {_TOTALS}", "postgresql": f"CREATE OR REPLACE VIEW {_TOTALS}"}
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass(frozen=True)
class Sale:
    message_id: str | None
    sold_on: str
    item: str
    quantity: str
    amount: str
    unit_price: str


class Ledger:
    def __init__(self, url: str) -> None:
        self.engine = _engine(url)
        dialect = self.engine.dialect.name
        if dialect not in _INSERT:
            raise ValueError(f"SALES_DATABASE_URL: unsupported database {dialect!r}; use sqlite or postgresql")
        self._insert = _INSERT[dialect](sales_rows).on_conflict_do_nothing(index_elements=["message_id"])
        self._create_schema(_CREATE_VIEW[dialect])

    def store(self, sales: list[Sale]) -> None:
        """Store a batch in one transaction; rows whose message id is already stored are skipped."""
        with self.engine.begin() as connection:
            connection.execute(self._insert, [asdict(sale) for sale in sales])

    def _create_schema(self, create_view: str) -> None:
        """Create the table and view if missing; another worker creating them at the same moment is fine."""
        for attempt in range(3):
            try:
                with self.engine.begin() as connection:
                    metadata.create_all(connection)
                    connection.execute(text(create_view))
                return
            except (exc.IntegrityError, exc.ProgrammingError, exc.OperationalError):
                if attempt == 2:
                    raise


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_wal)
    return engine


def _sqlite_wal(connection, record) -> None:  # noqa: ANN001 - DB-API objects
    """Several workers share the file: readers never block the writer."""
    connection.execute("PRAGMA journal_mode=WAL")


_lock = threading.Lock()
_ledger: Ledger | None = None


def ledger() -> Ledger:
    """The process's ledger, opened on first use from SALES_DATABASE_URL."""
    global _ledger
    with _lock:
        if _ledger is None:
            _ledger = Ledger(os.environ.get("SALES_DATABASE_URL") or DEFAULT_URL)
        return _ledger
