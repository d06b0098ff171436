"""Checked reading of nested protocol data (as tomllib or json produce it).

The protocol checker must list every mistake, so nothing here raises: a reader records the mistake with
its key path and hands back ``None``, and the caller carries on with whatever it could read. Callers
check cross-references only between parts that were read cleanly, so one mistake is reported once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def type_name(value: Any) -> str:
    # bool before int (bool is an int subclass) and datetime before date, for the same reason.
    for kind, name in (
        (bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), (list, "array"),
        (tuple, "array"), (dict, "table"), (datetime, "datetime"), (date, "date"),
    ):
        if isinstance(value, kind):
            return name
    return "nothing" if value is None else type(value).__name__


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Checker:
    """Collects mistakes as ``"key.path: message"``."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}" if path else message)

    def mark(self) -> int:
        return len(self.errors)

    def clean_since(self, mark: int) -> bool:
        return len(self.errors) == mark


_KIND_OK = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "array": lambda v: isinstance(v, list | tuple),
    "table": lambda v: isinstance(v, dict),
}
_KIND_WORD = {"number": "number", "array": "array", "table": "table"}


def kind_ok(kind: str, value: Any) -> bool:
    return _KIND_OK[kind](value)


def expected(kind: str, value: Any) -> str:
    return f"expected {_KIND_WORD.get(kind, kind)}, got {type_name(value)}"


class Table:
    """One table of the protocol: reports unknown keys up front, then typed getters."""

    def __init__(self, ck: Checker, data: Any, path: str, allowed: Iterable[str]) -> None:
        self.ck = ck
        self.path = path
        self.ok = isinstance(data, dict)
        self.data: dict[Any, Any] = data if isinstance(data, dict) else {}
        if not self.ok:
            ck.err(path, expected("table", data))
        allowed = set(allowed)
        for key in self.data:
            if key not in allowed:
                ck.err(path, f"unknown key '{key}'")

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str, kind: str, *, required: bool = True, default: Any = None) -> Any:
        if key not in self.data:
            if required and self.ok:
                self.ck.err(self.at(key), "required")
            return default
        value = self.data[key]
        if isinstance(value, float) and not math.isfinite(value):
            self.ck.err(self.at(key), "must be a finite number")
            return default
        if not kind_ok(kind, value):
            self.ck.err(self.at(key), expected(kind, value))
            return default
        return value

    def string(
        self, key: str, *, required: bool = True, default: str | None = None,
        pattern: re.Pattern[str] | None = None, rule: str = "",
    ) -> str | None:
        value = self.get(key, "string", required=required, default=None)
        if value is None:
            return default
        if not value.strip():
            self.ck.err(self.at(key), "must not be empty")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.ck.err(self.at(key), f"'{value}' {rule}")
            return default
        return value

    def integer(self, key: str, *, required: bool = True, default: int | None = None,
                minimum: int | None = None) -> int | None:
        value = self.get(key, "integer", required=required, default=None)
        if value is None:
            return default
        if minimum is not None and value < minimum:
            self.ck.err(self.at(key), f"must be at least {minimum}, got {value}")
            return default
        return value

    def boolean(self, key: str, *, default: bool = False) -> bool:
        value = self.get(key, "boolean", required=False, default=None)
        return default if value is None else value

    def number(self, key: str, *, required: bool = True) -> Decimal | None:
        value = self.get(key, "number", required=required)
        return None if value is None else to_decimal(value)

    def items(self, key: str, *, required: bool = True) -> Iterator[tuple[str, Any]]:
        """(path, element) for each element of an array."""
        value = self.get(key, "array", required=required, default=[])
        for i, item in enumerate(value):
            yield join(self.at(key), i), item

    def strings(self, key: str, *, required: bool = True) -> list[tuple[str, str]]:
        out = []
        for path, item in self.items(key, required=required):
            if isinstance(item, str):
                out.append((path, item))
            else:
                self.ck.err(path, expected("string", item))
        return out


def declared_ids(items: Any, key: str = "id") -> set[str]:
    """Ids written in a raw array of tables, whether or not the entries are valid.

    A reference to an entry that exists but has mistakes of its own is not reported again.
    """
    if not isinstance(items, list | tuple):
        return set()
    return {i[key] for i in items if isinstance(i, dict) and isinstance(i.get(key), str)}


def to_decimal(value: int | float) -> Decimal:
    # repr gives the shortest text that reads back as the same float: 0.26 -> Decimal("0.26").
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def duplicates(ck: Checker, entries: Iterable[tuple[str, str | None]], what: str = "id") -> set[str]:
    """Report every repeated id (path, id) after its first use; returns the set of ids seen."""
    seen: set[str] = set()
    for path, ident in entries:
        if ident is None:
            continue
        if ident in seen:
            ck.err(path, f"duplicate {what} '{ident}'")
        seen.add(ident)
    return seen


__all__ = ["Checker", "Table", "declared_ids", "duplicates", "expected", "join", "kind_ok", "to_decimal", "type_name"]
