"""The batching writer shared by both sources: one idempotent transaction per batch."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from app.models import (
    COMPRESSED_COLUMNS,
    DEDUP_KEY,
    LOCK_USER_ITEMS,
    Task,
    User,
    UserItem,
    compress_with_lz4,
    lock_user_items,
)
from app.pubsub.messages import quarantined

if TYPE_CHECKING:
    from app.alerts.evaluate import RuleEvaluator

COLUMNS = [
    "user_id", "subscription", "message_id", "publish_time", "received_at", "data_text", "data_bytes",
    "is_json", "attributes_json", "ordering_key", "delivery_attempt", "size",
]
STAGE_TABLE = "user_item_stage"
STAGE_COMPRESSED_COLUMNS = tuple(name for name in COMPRESSED_COLUMNS if name in COLUMNS)
COPY_READ_BYTES = 1 << 20


# PostgreSQL's binary COPY format: a signature, flags and header extension length (both 0); each
# row as its field count, then each field as its length (-1 for NULL) and its bytes; -1 at the end.
# The server has no text to parse, and this process nothing to escape (bench/copy_format.py, 1 KB
# rows: PostgreSQL's CPU a row x0.77 against the text format, formatting here x0.81).
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_FIELD_COUNT = struct.pack(">h", len(COLUMNS))
_NULL = struct.pack(">i", -1)
_TRUE, _FALSE = struct.pack(">ib", 1, 1), struct.pack(">ib", 1, 0)
_length = struct.Struct(">i").pack
_int4 = struct.Struct(">ii").pack  # length 4, then a 32-bit integer
_int8 = struct.Struct(">iq").pack  # length 8, then a 64-bit integer
# timestamptz travels as microseconds since 2000-01-01 UTC.
_POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    encoded = value.encode()
    return _length(len(encoded)) + encoded


def _time(value: datetime | None) -> bytes:
    if value is None:
        return _NULL
    if value.tzinfo is None:
        # As the app reads a naive time back (app.models.as_utc). Rows hold aware times; a naive one
        # in a quarantined row (a plain INSERT) would be read in the session's time zone.
        value = value.replace(tzinfo=UTC)
    return _int8(8, (value - _POSTGRES_EPOCH) // _MICROSECOND)


_UNSET = object()


def copy_tuples(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows in PostgreSQL's binary COPY format, in COLUMNS order, without the header and trailer.

    Written out column by column, and the values a batch's rows share (the subscription, the time
    received) are encoded once: this is the writer's hot loop.
    """
    fields = []
    subscription, subscription_field = _UNSET, b""
    received, received_field = _UNSET, b""
    for row in rows:
        if row["subscription"] is not subscription:
            subscription = row["subscription"]
            subscription_field = _text(subscription)
        if row["received_at"] is not received:
            received = row["received_at"]
            received_field = _time(received)
        data, attempt = row["data_bytes"], row["delivery_attempt"]
        fields += (
            _FIELD_COUNT, _int4(4, row["user_id"]), subscription_field, _text(row["message_id"]),
            _time(row["publish_time"]), received_field, _text(row["data_text"]),
            _NULL if data is None else _length(len(data)) + data, _TRUE if row["is_json"] else _FALSE,
            _text(row["attributes_json"]), _text(row["ordering_key"]),
            _NULL if attempt is None else _int4(4, attempt), _int4(4, row["size"]),
        )
    return b"".join(fields)


def copy_data(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as a whole binary COPY: header, rows, trailer."""
    return COPY_HEADER + copy_tuples(rows) + COPY_TRAILER


COPY_INTO_TABLE = f"COPY {UserItem.__table__.name} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)"
COPY_INTO_STAGE = f"COPY {STAGE_TABLE} ({', '.join(COLUMNS)}) FROM STDIN (FORMAT binary)"
# Rows formatted at a time while a COPY is under way (about 100 kB of 1 kB messages).
COPY_ROWS_PER_CHUNK = 100


class CopyStream:
    """A batch's COPY data as a file to read from, formatted COPY_ROWS_PER_CHUNK rows at a time as it is read.

    psycopg2 sends each read to PostgreSQL, and waits on the socket without holding the GIL, so the
    server inserts one chunk while this formats the next: the batch's formatting no longer comes
    before all of the server's work. What is formatted is kept, so rewind() reads the same bytes
    again (a batch that meets a redelivery is COPYed a second time, into the stage table).
    Concatenated, the chunks are exactly copy_data(rows).
    """

    def __init__(self, rows: Sequence[dict[str, Any]], rows_per_chunk: int = COPY_ROWS_PER_CHUNK):
        self.rows = rows
        self.rows_per_chunk = rows_per_chunk
        self.chunks: list[bytes] = []
        self.formatted = 0  # rows formatted so far
        self.ended = False  # whether the trailer is in self.chunks
        self.error: Exception | None = None  # what formatting a row raised, if it did
        self.chunk = 0  # the chunk being read
        self.offset = 0  # into that chunk

    def rewind(self) -> CopyStream:
        self.chunk = self.offset = 0
        return self

    def _format_next(self) -> bool:
        """Add the next chunk (the first one carries the header, the trailer follows the rows); False at the end."""
        if self.formatted < len(self.rows):
            end = self.formatted + self.rows_per_chunk
            chunk = copy_tuples(self.rows[self.formatted : end])
            self.chunks.append(COPY_HEADER + chunk if self.formatted == 0 else chunk)
            self.formatted = min(end, len(self.rows))
        elif not self.ended:
            self.chunks.append(COPY_TRAILER if self.chunks else COPY_HEADER + COPY_TRAILER)
            self.ended = True
        else:
            return False
        return True

    def read(self, size: int = -1) -> bytes:
        """The next bytes, at most `size` of them (all of the current chunk when size < 0); b"" at the end."""
        while self.chunk == len(self.chunks):
            try:
                more = self._format_next()
            except Exception as error:
                # psycopg2 replaces an error raised here with its own: BatchWriter._copy raises this one.
                self.error = error
                raise
            if not more:
                return b""
        data = self.chunks[self.chunk]
        if self.offset == 0 and (size < 0 or len(data) <= size):
            self.chunk += 1
            return data
        end = len(data) if size < 0 else self.offset + size
        piece = data[self.offset : end]
        if end >= len(data):
            self.chunk, self.offset = self.chunk + 1, 0
        else:
            self.offset = end
        return piece


def sqlite_time(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's SQLite DateTime stores it: "YYYY-MM-DD HH:MM:SS.ffffff", the zone dropped."""
    return None if value is None else value.isoformat(" ", "microseconds")[:26]


def sqlite_values(rows: Sequence[dict[str, Any]]) -> list:
    """The rows' values in COLUMNS order, flat, as SQLAlchemy would bind them on SQLite (the time
    received, which a batch's rows share, formatted once)."""
    values = []
    received, received_text = _UNSET, ""
    for row in rows:
        if row["received_at"] is not received:
            received = row["received_at"]
            received_text = sqlite_time(received)
        values += (row["user_id"], row["subscription"], row["message_id"], sqlite_time(row["publish_time"]),
                   received_text, row["data_text"], row["data_bytes"], 1 if row["is_json"] else 0,
                   row["attributes_json"], row["ordering_key"], row["delivery_attempt"], row["size"])
    return values


def _id_sequence():
    """The PostgreSQL sequence behind user_item.id, as an SQL expression."""
    return sa.func.pg_get_serial_sequence(UserItem.__table__.name, "id")


# SQLite takes at most 32,766 bound values in a statement: 2,000 rows of 12 columns stay well under it.
SQLITE_ROWS_PER_INSERT = 2000


# Errors that say a row's data cannot be stored, not that the database is unreachable. psycopg2
# refuses a NUL in a bound string with a ValueError, before anything is sent; a row that cannot be
# formatted for COPY raises one too (BatchWriter._copy).
DATA_ERRORS = (sa.exc.DataError, ValueError)


def rejection_reason(error: Exception) -> str:
    """The database's own words for a refused row, first line only (later ones quote the data)."""
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
    lines = str(cause).strip().splitlines() or [""]
    return f"the database refused it ({cause.__class__.__name__}: {lines[0]})"


class UserGone(LookupError):
    """The user whose messages these are, or their polling task, no longer exists: the batch was undone
    (in a bisected write, halves committed before are deleted with the user)."""


# Built once: it runs for every batch.
_COUNT_IN_TASK = (
    sa.update(Task)
    .where(Task.id == sa.bindparam("task"))
    .values(stored_count=Task.stored_count + sa.bindparam("inserted", type_=sa.Integer),
            quarantined_count=Task.quarantined_count + sa.bindparam("quarantined", type_=sa.Integer),
            heartbeat_at=sa.bindparam("now", type_=Task.heartbeat_at.type))
)


UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


class _Redelivered(Exception):
    """A direct COPY met a message stored already (a unique violation); its transaction is undone. Holds the batch's
    COPY data, formatted already, for the stage table."""

    def __init__(self, data: CopyStream):
        super().__init__("a redelivered message")
        self.data = data


class BatchWriter:
    """Stores rows for one user's task; a redelivered message (same DEDUP_KEY) is stored once.

    On PostgreSQL a batch is COPYed straight into the table, unless the batch before met a
    redelivery; a batch that meets one (a unique violation) is undone and COPYed again into a
    temporary table, then moved over with INSERT ... SELECT ... ON CONFLICT DO NOTHING (about twice
    as fast as a multi-row VALUES insert);
    SQLite takes a multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING directly (_insert_sqlite).
    Quarantined rows (rare) take a plain INSERT ... ON CONFLICT DO NOTHING on both.

    With an `evaluator` (app.alerts.evaluate), the rows each batch really inserted are handed to
    it inside the batch's transaction, when one of the user's alert rules matches a message of the
    batch, so a redelivery, which inserts nothing, fires nothing. Their ids come from the INSERT's
    RETURNING, or, when the batch was COPYed straight in (all of it new), are read back for the
    matched rows alone (_ids_of). A batch no rule matches can fire nothing, and needs no ids.
    """

    def __init__(self, engine: sa.Engine, user_id: int, task_id: str | None = None,
                 evaluator: RuleEvaluator | None = None):
        self.engine = engine
        self.user_id = user_id
        self.task_id = task_id
        self.evaluator = evaluator
        table = UserItem.__table__
        dialect = engine.dialect.name
        if dialect not in ("postgresql", "sqlite"):
            raise RuntimeError(f"unsupported database {dialect!r}: use PostgreSQL or SQLite")
        self.is_postgresql = dialect == "postgresql"
        self.copy_directly = True  # whether the next batch is COPYed straight into user_item
        if self.is_postgresql:
            stage = sa.table(STAGE_TABLE, *(sa.column(name) for name in COLUMNS))
            self.insert = postgresql.insert(table).from_select(COLUMNS, sa.select(stage)).on_conflict_do_nothing(
                index_elements=list(DEDUP_KEY)
            )
            self.insert_returning = self.insert.returning(table.c.id, table.c.message_id)
            self.create_stage = sa.text(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE_TABLE} ON COMMIT DELETE ROWS AS "
                f"SELECT {', '.join(COLUMNS)} FROM {table.name} WITH NO DATA"
            )
            self.lock_and_check, self.lock_and_check_params = self._lock_and_check(engine.dialect)
        dialect_insert = postgresql.insert if self.is_postgresql else sqlite.insert
        self.insert_quarantined = dialect_insert(table).on_conflict_do_nothing(
            index_elements=list(DEDUP_KEY)
        ).returning(table.c.id, table.c.message_id)

    def _lock_and_check(self, dialect: sa.Dialect) -> tuple[str, dict[str, Any]]:
        """The first statement of a batch COPYed straight in, as SQL and its fixed parameters: the user's
        lock, then, sent in the same round trip and run after it, the task's count update (or, for a
        writer without a task, a read of the user's row), returning whether any of the user's alert
        rules watches these messages. No row comes back when the task (or the user) is gone.

        The batch's count is added before its COPY: that COPY inserts every row or fails, and a failure
        undoes the transaction. Three round trips a batch become one (the lock, the rules, the count).
        The task's row stays locked until the batch commits, so a stop request or another stream's
        heartbeat that writes it waits for that batch (tens of ms for 1,000 messages of 1 KB); the
        user's lock already makes the task's own batches take turns."""
        rules = sa.exists().where(self.evaluator.watching()) if self.evaluator is not None else sa.false()
        # The same count update as _count_or_undo's, with nothing quarantined (such batches take that path).
        check = (_COUNT_IN_TASK.returning(rules) if self.task_id is not None
                 else sa.select(rules).where(User.id == self.user_id))
        lock, checked = LOCK_USER_ITEMS.compile(dialect=dialect), check.compile(dialect=dialect)
        if set(lock.params) & set(checked.params):
            raise RuntimeError(f"parameter names used twice: {set(lock.params) & set(checked.params)}")
        # psycopg2 sends both in one message; PostgreSQL runs them in order, each with its own snapshot.
        # The count's parameters "inserted" and "now" are left out: each batch gives them.
        fixed = {**checked.params, **lock.construct_params({"user_id": self.user_id})}
        if self.task_id is not None:
            fixed.update(task=self.task_id, quarantined=0)
        return f"{lock}; {checked}", {name: value for name, value in fixed.items() if name not in ("inserted", "now")}

    def write(self, rows: Sequence[dict[str, Any]]) -> int:
        """Store the rows and return how many were new, quarantined ones included.

        One transaction when all goes well. When the database refuses the batch's data
        (DATA_ERRORS), the batch is bisected: the rows it takes are stored, and each row it
        refuses is stored in its quarantined form, so one message never holds back another.
        Raises SQLAlchemyError only when the database fails as a whole (an outage), and UserGone
        when the user or the task was deleted: then nothing should be acked. A row refused even in
        its bare quarantined form raises too (a bug).
        """
        if not rows:
            return 0
        try:
            return self._commit(rows)
        except DATA_ERRORS as error:
            if len(rows) > 1:
                middle = len(rows) // 2
                return self.write(rows[:middle]) + self.write(rows[middle:])
            # Once, not recursively: a bare form refused too is a bug to see, so it raises.
            return self._commit([quarantined(rows[0], rejection_reason(error), bare=True)])

    def _commit(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert the rows in one transaction and return how many were new; raises whatever the database raised.

        On PostgreSQL the batch is COPYed straight into user_item, unless the last batch met a
        redelivery: a redelivered message fails that COPY, which undoes the transaction, and the
        batch is written again through the stage table. (A savepoint around the COPY would spare
        that, for two more round trips on every batch.)
        """
        if self.is_postgresql and self.copy_directly:
            try:
                return self._commit_once(rows, direct=True)
            except _Redelivered as redelivered:
                self.copy_directly = False
                return self._commit_once(rows, direct=False, data=redelivered.data.rewind())
        return self._commit_once(rows, direct=False)

    def _commit_once(self, rows: Sequence[dict[str, Any]], direct: bool, data: CopyStream | None = None) -> int:
        held = [row for row in rows if row.get("quarantine_reason") is not None]
        if held:
            rows = [row for row in rows if row.get("quarantine_reason") is None]
        connection_info: dict | None = None
        evaluator = self.evaluator
        # Whether the batch's count and the user's check are made before its insert, with the lock.
        checked = self.is_postgresql and direct and not held
        try:
            with self.engine.begin() as connection:
                inserted = 0
                new_ids: list = []
                watching = False
                if self.is_postgresql:
                    # Before any insert: the lock also orders quarantined rows' ids (and serialises
                    # the user's alert rate counts). The rules are read first, when any watch the
                    # messages: they decide the INSERT.
                    if checked:
                        answer = connection.exec_driver_sql(self.lock_and_check, {
                            **self.lock_and_check_params, "inserted": len(rows), "now": datetime.now(UTC)}).first()
                        if answer is None:
                            raise UserGone(self._gone())
                        rules_watch = answer[0]
                    else:
                        lock_user_items(connection, self.user_id)
                        rules_watch = True
                    # Only the rows some rule matches can fire, so only their ids are needed back.
                    watched = None
                    if evaluator is not None and rules_watch and evaluator.load(connection):
                        watched = evaluator.matching(rows)
                        watching = bool(watched) or bool(held)
                    if rows:
                        inserted, new_ids, created_stage = self._write_postgresql(
                            connection, rows, watched if watching else None, direct, data)
                        if created_stage:
                            connection_info = connection.connection.info
                elif rows:
                    new_ids = self._insert_sqlite(connection, rows)
                    inserted = len(new_ids)
                quarantined_ids = connection.execute(self.insert_quarantined, held).all() if held else []
                if not self.is_postgresql:
                    # After the insert on SQLite: a transaction that reads first and writes later fails
                    # (SQLITE_BUSY_SNAPSHOT, no waiting) when another connection wrote in between.
                    watching = evaluator is not None and evaluator.load(connection)
                quarantined_count = len(quarantined_ids)
                inserted += quarantined_count
                if watching and (new_ids or quarantined_ids):
                    evaluator.stored(connection, self._new_rows(rows, new_ids, held, quarantined_ids))
                if not checked:
                    self._count_or_undo(connection, inserted, quarantined_count)
        except BaseException:
            if evaluator is not None:
                evaluator.discard()
            raise
        if evaluator is not None:
            evaluator.committed()
        if connection_info is not None:
            # Only after the commit is the temporary table sure to exist: a rollback undoes it.
            connection_info[STAGE_TABLE] = True
        return inserted

    def _count_or_undo(self, connection: sa.Connection, inserted: int, quarantined_count: int) -> None:
        """Add the batch to its task's counts; raise UserGone, undoing the batch, when the task (or,
        without one, the user) no longer exists.

        user_item has no foreign key (app.models.UserItem.user_id): this is what keeps a message from
        outliving its user. It is asked under the user's lock, which app.users.delete_user takes
        before its deletes (on SQLite, under the write lock the inserts hold), so the user cannot go
        before the batch commits: after the inserts, or, for a batch COPYed straight into user_item on
        PostgreSQL, before them, in the statement that takes the lock (_lock_and_check). The task,
        not the user, is what a polling job asks about: deleting a user deletes their tasks, and a
        task's id is never used again, where SQLite may give a deleted user's id to the next user made.
        """
        if self.task_id is not None:
            counted = connection.execute(_COUNT_IN_TASK, {
                "task": self.task_id, "inserted": inserted, "quarantined": quarantined_count,
                "now": datetime.now(UTC)})
            if counted.rowcount != 1:
                raise UserGone(self._gone())
        elif connection.scalar(sa.select(User.id).where(User.id == self.user_id)) is None:
            raise UserGone(self._gone())

    def _gone(self) -> str:
        if self.task_id is not None:
            return f"task {self.task_id} no longer exists"
        return f"user {self.user_id} no longer exists"

    @staticmethod
    def _new_rows(rows: Sequence[dict[str, Any]], new_ids: Sequence, held: Sequence[dict[str, Any]],
                  quarantined_ids: Sequence) -> list[tuple[int, dict[str, Any]]]:
        """The rows the INSERTs returned, as (id, row): the RETURNING gives ids and message ids, the
        rows in memory give the rest (no message data travels back from the database)."""
        new_rows = []
        for returned, sent in ((new_ids, rows), (quarantined_ids, held)):
            if returned:
                by_message_id = {row["message_id"]: row for row in sent}
                new_rows.extend((item_id, by_message_id[message_id]) for item_id, message_id in returned)
        return new_rows

    def _write_postgresql(self, connection: sa.Connection, rows: Sequence[dict[str, Any]],
                          wanted: Sequence[dict[str, Any]] | None, direct: bool,
                          data: CopyStream | None) -> tuple[int, list, bool]:
        """How many rows were inserted; with `wanted` (the rows some alert rule matches), the
        (id, message_id) of inserted rows that include every wanted one that was inserted; and whether
        the stage table was created in this transaction. `direct`: COPY straight into user_item, and
        raise _Redelivered when a row is there already (the transaction is then lost). `data`: the
        rows' COPY data when a direct COPY formatted it already."""
        # The caller holds the user's advisory lock, which serialises a user's batches so their item
        # ids commit in id order: the page's `after=<id>` cursor must never miss a lower id that commits late.
        # Formatted a chunk at a time while the server works on the chunk before, and handed over in
        # large reads (psycopg2 would otherwise read 8 kB at a time).
        data = data or CopyStream(rows)
        if direct:
            # Most batches hold only new messages. The direct path saves PostgreSQL a quarter of its
            # CPU per row against the stage table (1,000-row batches of 1 KB messages: 30 against 40 µs
            # of backend CPU a row). COPY returns no ids: when some are wanted, note where the id
            # sequence stands, to read them back.
            after = connection.scalar(sa.select(sa.func.nextval(_id_sequence()))) if wanted else None
            try:
                self._copy(connection, COPY_INTO_TABLE, data)
            except sa.exc.IntegrityError as error:
                if getattr(error.orig, "pgcode", None) != UNIQUE_VIOLATION:
                    raise
                raise _Redelivered(data) from None
            # Every row was new, the wanted ones too.
            return len(rows), self._ids_of(connection, wanted, after) if wanted else [], False
        created = not connection.connection.info.get(STAGE_TABLE)
        if created:
            connection.execute(self.create_stage)
            # Compressed as user_item is: a value compressed in the stage table is moved over as it is.
            compress_with_lz4(connection, STAGE_TABLE, STAGE_COMPRESSED_COLUMNS)
        self._copy(connection, COPY_INTO_STAGE, data)
        if wanted is not None:
            # What the INSERT really inserted: a redelivery returns nothing, so it fires nothing.
            new_ids = connection.execute(self.insert_returning).all()
            inserted = len(new_ids)
        else:
            new_ids, inserted = [], connection.execute(self.insert).rowcount
        # A batch with no redelivery in it: the next one goes straight in again.
        self.copy_directly = inserted == len(rows)
        return inserted, new_ids, created

    def _ids_of(self, connection: sa.Connection, rows: Sequence[dict[str, Any]], after: int) -> list:
        """(id, message_id) of these rows, COPYed in this transaction after the id sequence gave `after`.

        Their ids lie between `after` and the sequence's last value in this session (a session's values
        only grow); the user's advisory lock keeps any other writer of theirs out of that range. So one
        range scan on (user_id, id) finds them, whatever the planner knows of the table."""
        table = UserItem.__table__
        last = connection.scalar(sa.select(sa.func.currval(_id_sequence())))
        keys = {(row["subscription"], row["message_id"], row["publish_time"]) for row in rows}
        found = connection.execute(
            sa.select(table.c.id, table.c.subscription, table.c.message_id, table.c.publish_time)
            .where(table.c.user_id == self.user_id, table.c.id > after, table.c.id <= last,
                   table.c.message_id.in_({message_id for _, message_id, _ in keys}))
            .order_by(table.c.id)
        )
        return [(item_id, message_id) for item_id, subscription, message_id, publish_time in found
                if (subscription, message_id, publish_time) in keys]

    def _insert_sqlite(self, connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> list:
        """INSERT ... ON CONFLICT DO NOTHING RETURNING id, message_id: the statement SQLAlchemy's insert
        sends, with the values formatted by sqlite_values and handed to sqlite3 as they are, without
        SQLAlchemy's per-row parameter processing (half the writer's CPU on SQLite). It still goes
        through the connection (exec_driver_sql), so its events fire and its errors are SQLAlchemy's."""
        returned = []
        for start in range(0, len(rows), SQLITE_ROWS_PER_INSERT):
            chunk = rows[start : start + SQLITE_ROWS_PER_INSERT]
            statement = self._sqlite_statement(len(chunk))
            returned += connection.exec_driver_sql(statement, tuple(sqlite_values(chunk))).all()
        return returned

    @staticmethod
    def _sqlite_statement(count: int) -> str:
        row = "(" + ", ".join(["?"] * len(COLUMNS)) + ")"
        return (f"INSERT INTO {UserItem.__table__.name} ({', '.join(COLUMNS)}) VALUES {', '.join([row] * count)} "
                f"ON CONFLICT ({', '.join(DEDUP_KEY)}) DO NOTHING RETURNING id, message_id")

    @staticmethod
    def _copy(connection: sa.Connection, statement: str, data: CopyStream) -> None:
        dbapi_error = connection.dialect.loaded_dbapi.Error
        cursor = connection.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(statement, data, size=COPY_READ_BYTES)
        except dbapi_error as error:
            if data.error is not None:
                # A row that cannot be formatted (a value its column cannot hold): a data error, so
                # that the batch is bisected and the row quarantined, not an outage.
                raise ValueError(f"a row could not be formatted for COPY: {data.error!r}") from data.error
            # Raised like any other statement's error, so callers need only catch SQLAlchemyError.
            raise sa.exc.DBAPIError.instance(statement, None, error, dbapi_error) from error
        finally:
            cursor.close()
