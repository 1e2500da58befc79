"""Rows serialised for a prepared statement without a driver ``BoundStatement`` per row.

Written by hand because it is the processor's largest single cost otherwise:
``BatchStatement.add(prepared, row)`` builds a ``BoundStatement`` and serialises each value
through its column type's generic code path, about 8 µs per five-column row, measured (one
row per chat message, so more than a tenth of the processor's CPU). The processor binds
only plain Python values it made itself (``str``, ``bytes``, ``int``, ``bool``) to a handful
of CQL types, so a serialiser per column, chosen once from the prepared statement's
metadata, yields the same bytes in about 1 µs. Column types without a fast serialiser here
use the driver's own. The unit tests check every statement's bytes and routing key against
the driver's ``bind``.

The serialised values go into a ``BatchStatement`` through :class:`RowBatch`, which uses
the driver's (protected) ``_add_statement_and_params`` exactly as its own ``add`` does after
binding; the same tests compare the batch's contents with what ``add`` builds.
"""

import struct
from collections.abc import Callable, Sequence
from typing import Any

from cassandra import cqltypes
from cassandra.query import BatchStatement, BatchType, PreparedStatement

__all__ = ["RowBatch", "RowBinder"]

Serializer = Callable[[Any], bytes]

_int64 = struct.Struct(">q").pack
_uint32 = struct.Struct(">I").pack
_int32 = struct.Struct(">i").pack


def _utf8(value: str) -> bytes:
    return value.encode()


def _blob(value: bytes) -> bytes:
    return value


def _boolean(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def _date(value: int) -> bytes:
    # a CQL date as the driver binds an int: days since the epoch plus 2**31
    return _uint32(value)


_FAST: dict[type[Any], Serializer] = {
    cqltypes.UTF8Type: _utf8,
    cqltypes.VarcharType: _utf8,
    cqltypes.BytesType: _blob,
    cqltypes.LongType: _int64,
    cqltypes.CounterColumnType: _int64,
    cqltypes.DateType: _int64,  # timestamp: epoch milliseconds
    cqltypes.Int32Type: _int32,
    cqltypes.BooleanType: _boolean,
    cqltypes.SimpleDateType: _date,
}


def _serializer(column_type: Any, protocol_version: int) -> Serializer:
    fast = _FAST.get(column_type)
    if fast is not None:
        return fast

    def generic(value: Any) -> bytes:
        return bytes(column_type.serialize(value, protocol_version))

    return generic


class RowBinder:
    """Serialises rows (tuples in bind-marker order) for one prepared statement.

    Values must be the plain types the columns take (``str``, ``bytes``, ``bool``, and
    ``int`` within the column's range: for timestamps in epoch milliseconds, for dates the
    driver's offset day count); ``None`` binds null. Anything else raises ``TypeError``
    naming the column.
    """

    def __init__(self, prepared: PreparedStatement) -> None:
        self.query_id: bytes = prepared.query_id
        columns = prepared.column_metadata
        self._columns = tuple(column.name for column in columns)
        # as a BoundStatement takes it, from the first column
        self.keyspace: str | None = columns[0].keyspace_name if columns else None
        self.routing_indexes: tuple[int, ...] = tuple(prepared.routing_key_indexes or ())
        # one per bind marker, in order: a hot path may call them itself (``None`` aside)
        self.serializers: tuple[Serializer, ...] = tuple(
            _serializer(column.type, prepared.protocol_version)
            for column in prepared.column_metadata
        )

    def values(self, row: Sequence[Any]) -> list[bytes | None]:
        """The row's serialised values."""
        if len(row) != len(self.serializers):
            raise ValueError(f"{len(row)} values for {len(self.serializers)} bind markers")
        try:
            return [
                None if value is None else serialize(value)
                for serialize, value in zip(self.serializers, row, strict=True)
            ]
        except (TypeError, AttributeError, struct.error, UnicodeError) as exc:
            raise TypeError(self._describe(row, exc)) from exc

    def _describe(self, row: Sequence[Any], exc: Exception) -> str:
        for index, (serialize, value) in enumerate(zip(self.serializers, row, strict=True)):
            try:
                if value is not None:
                    serialize(value)
            except (TypeError, AttributeError, struct.error, UnicodeError):
                column = self._columns[index]
                return f"column {column!r}: cannot bind {value!r} ({exc})"
        return str(exc)


# the driver has no type hints, so its classes are Any to mypy
class RowBatch(BatchStatement):  # type: ignore[misc]
    """An unlogged batch of rows serialised by :class:`RowBinder`."""

    def __init__(self) -> None:
        super().__init__(batch_type=BatchType.UNLOGGED)
        self._routed = False

    def add_values(self, binder: RowBinder, values: list[bytes | None]) -> None:
        """Add one row already serialised for ``binder``'s statement; the first routable
        row decides where the batch is sent, as in ``BatchStatement.add``."""
        if len(values) != len(binder.serializers):
            raise ValueError(f"{len(values)} values for {len(binder.serializers)} bind markers")
        if not self._routed and binder.routing_indexes and binder.keyspace:
            parts = [values[i] for i in binder.routing_indexes]
            # like the driver, skip a row whose key is empty; the setter packs a composite
            # partition key as the driver does
            if len(parts) > 1 or parts[0]:
                self.routing_key = parts
                self.keyspace = binder.keyspace
                self._routed = True
        self._add_statement_and_params(True, binder.query_id, values)
