"""``postgres_changes`` filters: parse a Supabase Realtime filter string, evaluate it on a row.

Pure: no I/O. A filter is parsed once, when a channel subscribes, against the table's column
types; evaluating it on a changed row (``to_jsonb(row)`` decoded from JSON) then costs a dictionary
look-up and one comparison of pre-parsed values per condition.

Syntax (PostgREST style, as Supabase Realtime 2.129 accepts it)
-----------------------------------------------------------------
``column=op.value``, several of them joined by commas, all of which must hold (AND)::

    status=eq.open
    id=eq.a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11
    created_at=gte.2026-11-26T12:00:00Z,status=not.in.(closed,resolved)
    subject=ilike.*refund*
    assigned_user_id=is.null

* Operators: ``eq`` (=), ``neq`` (<>), ``lt`` ``lte`` ``gt`` ``gte`` (< <= > >=),
  ``in.(a,b,...)`` (= ANY), ``is.null`` / ``is.true`` / ``is.false`` / ``is.unknown`` (IS),
  ``like`` / ``ilike`` (LIKE / ILIKE; ``*`` is a wildcard like ``%``, ``_`` matches one character,
  ``\\`` escapes the next character), ``isdistinct`` (IS DISTINCT FROM). ``not.`` before any
  operator negates it (SQL NOT: ``status=not.eq.closed``, ``x=not.is.null``).
* Conditions are split on commas outside parentheses and outside double quotes; a double quote
  opens a quoted section only right after ``.``, ``(`` or ``,``. Blanks around a condition are
  ignored; an empty condition (``a=eq.1,,b=eq.2``) is an error.
* A value may be double-quoted (``name=eq."a,b"``); inside quotes a backslash escapes the next
  character (``\\"``, ``\\\\``). A value that starts with a quote must be exactly one quoted string.
* ``in`` takes a parenthesised list with the element syntax of a PostgreSQL array literal:
  comma-separated, blanks around items ignored, ``"..."`` quoted items may contain commas,
  parentheses and ``\\``-escapes, a backslash escapes one character of an unquoted item, and an
  unquoted ``null`` is SQL NULL (so ``x=not.in.(1,null)`` matches nothing, as in SQL). At most
  100 items; ``in.()`` is the empty list.

Semantics: as PostgreSQL evaluates the equivalent WHERE clause
--------------------------------------------------------------
Each value is read as the column's type with PostgreSQL's input rules (``id=eq.notauuid`` on a
uuid column is an error; ``0x1F`` and ``1_000`` are integers, as in PostgreSQL 16) and compared
as that type: uuids as 128-bit values (so case and hyphenation do not matter), numbers
numerically (numeric and floating NaN equal to themselves and above every other value, -0 = 0),
timestamps as instants, jsonb by PostgreSQL's jsonb equality (key order and ``1`` vs ``1.0`` do
not matter). SQL three-valued logic: NULL (or a key missing from the row) satisfies none of
eq/neq/lt/lte/gt/gte/in/like/ilike, nor their ``not.`` forms (NOT NULL is NULL); only ``is``,
``isdistinct`` and ``not.in.()`` (an empty list: ``x = ANY('{}')`` is false even for NULL) can
match a NULL. A row value that cannot be read as the column's type never matches (fail closed).

Decisions (documented deviations and limits)
--------------------------------------------
* Supported column types: uuid, text, varchar/character varying, boolean, smallint, integer,
  bigint, numeric/decimal, real, double precision, timestamp with/without time zone, date, jsonb,
  json; either spelling (``format_type()`` or ``pg_type.typname``), type modifiers ignored. On a
  column of any other type (arrays, enums, inet, ...) only ``is.null`` / ``not.is.null`` are
  accepted.
* Operators per type: ordering (lt/lte/gt/gte) on every supported type but jsonb and json (jsonb's
  btree order is not meaningful to clients); eq/neq/in/isdistinct on every supported type but json
  (PostgreSQL has no json equality); like/ilike on text and varchar only; is.true/false/unknown on
  boolean only. ``match``/``imatch`` (POSIX regular expressions) are refused: Python's regular
  expressions are not PostgreSQL's.
* Text is ordered by code point (the ``C`` collation), which is also how the database compares
  UTF-8 text under ``C``/``C.UTF-8``. ILIKE folds case with Unicode simple lower-casing, as
  PostgreSQL's ``lower()`` does under a UTF-8 libc or ICU locale.
* A timestamptz value without an offset is read as UTC. Date/time values accept ISO 8601 forms:
  ``YYYY-MM-DD``, optionally ``T`` or blanks and ``HH:MM[:SS[.fraction]]``, optionally ``Z``,
  ``UTC``, ``GMT`` or a numeric offset (``+HH``, ``+HHMM``, ``+HH:MM``, ``+HH:MM:SS``); also
  ``infinity``, ``-infinity`` and ``epoch``. Fractions are rounded to microseconds as PostgreSQL
  rounds them. ``now``/``today`` (which change meaning over time), zone names such as
  ``Europe/Oslo`` and non-ISO spellings are refused. A zone given for a ``timestamp`` (without
  time zone) or a time given for a ``date`` is ignored, as PostgreSQL ignores it.
* Hexadecimal floating-point input (accepted by PostgreSQL through ``strtod``) is refused.
* Quoting: a value that starts with ``"`` but is not one well-formed quoted string is an error
  (Realtime would take it literally); an unquoted ``in`` item must not contain ``"``, ``{`` or
  ``}`` (PostgreSQL would reject or reinterpret it); a LIKE pattern must not end with a lone
  backslash (PostgreSQL errors on it, depending on the row).
* A top-level JSON ``null`` in a jsonb column is indistinguishable from SQL NULL in
  ``to_jsonb(row)``, so it is taken as SQL NULL (``is.null`` matches it, ``eq.null`` does not).
* Precision: record values are compared as the JSON decoder delivers them; a numeric with more
  than 15-17 significant digits that arrives as a double is compared at double precision.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "MAX_IN_VALUES",
    "OPERATORS",
    "Condition",
    "Filter",
    "FilterError",
    "normalize",
    "parse_filter",
]


class FilterError(ValueError):
    """A filter that cannot be used; the message is safe to show to the client."""


#: Supported operators (each may be prefixed with ``not.``).
OPERATORS = ("eq", "neq", "lt", "lte", "gt", "gte", "in", "is", "like", "ilike", "isdistinct")
#: The most items an ``in`` list may have (as in Supabase Realtime).
MAX_IN_VALUES = 100

_ORDERING = {"lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge}
_COMPARISONS = {"eq": operator.eq, "neq": operator.ne, **_ORDERING}
_IS_KEYWORDS: dict[str, bool | None] = {"null": None, "unknown": None, "true": True, "false": False}

# C isspace(): what PostgreSQL's input functions skip around a value.
_WS = " \t\n\r\v\f"
_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")  # not storable in PostgreSQL text


class _Invalid(ValueError):
    """A value that the column's type does not accept; the message says why."""


# -- types ---------------------------------------------------------------------------------------

Key = Any  # a normalized, hashable and ordered value (see normalize())


@dataclass(frozen=True, slots=True)
class _Type:
    name: str  # canonical: the typname
    label: str  # for messages: the SQL name
    parse: Callable[[str], Key]  # filter value text -> key; raises _Invalid
    norm: Callable[[Any], Key]  # row value (non-null) -> key; raises ValueError/TypeError
    equality: bool = True  # eq, neq, in, isdistinct
    ordered: bool = True  # lt, lte, gt, gte
    textual: bool = False  # like, ilike


# uuid: PostgreSQL accepts optional braces and a hyphen after any group of four hex digits.
_UUID_TEXT = re.compile(r"(\{)?([0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7})(?(1)\})")


def _parse_uuid(text: str) -> uuid.UUID:
    m = _UUID_TEXT.fullmatch(text)
    if m is None:
        raise _Invalid("not a uuid")
    return uuid.UUID(hex=m.group(2).replace("-", ""))


# One change is checked against many subscriptions: parse each row's uuid text once.
_uuid_of_text = functools.lru_cache(maxsize=4096)(uuid.UUID)


def _norm_uuid(value: Any) -> uuid.UUID:
    if type(value) is str:
        return _uuid_of_text(value)
    if isinstance(value, uuid.UUID):
        return value
    raise TypeError("uuid must be a string")


def _parse_text(text: str) -> str:
    return text


def _norm_text(value: Any) -> str:
    if type(value) is str:
        return value
    raise TypeError("text must be a string")


def _parse_bool(text: str) -> bool:
    s = text.strip(_WS)
    if not s.isascii():
        raise _Invalid("not a boolean")
    low = s.lower()
    first = low[:1]
    if first == "t" and "true".startswith(low):
        return True
    if first == "f" and "false".startswith(low):
        return False
    if first == "y" and "yes".startswith(low):
        return True
    if first == "n" and "no".startswith(low):
        return False
    if low == "on":
        return True
    if len(low) >= 2 and "off".startswith(low):
        return False
    if low == "1":
        return True
    if low == "0":
        return False
    raise _Invalid("not a boolean")


def _norm_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise TypeError("boolean must be a JSON boolean")


# PostgreSQL 16 integer input: decimal, 0x/0o/0b, single underscores between digits.
_INT_TEXT = re.compile(
    r"[ \t\n\r\v\f]*([+-]?)(?:0[xX]((?:_?[0-9a-fA-F])+)|0[oO]((?:_?[0-7])+)|0[bB]((?:_?[01])+)"
    r"|([0-9](?:_?[0-9])*))[ \t\n\r\v\f]*"
)


def _int_from_text(text: str) -> int | None:
    m = _INT_TEXT.fullmatch(text)
    if m is None:
        return None
    sign, hexa, octal, binary, dec = m.groups()
    if hexa is not None:
        n = int(hexa.replace("_", ""), 16)
    elif octal is not None:
        n = int(octal.replace("_", ""), 8)
    elif binary is not None:
        n = int(binary.replace("_", ""), 2)
    else:
        n = int(dec.replace("_", ""))
    return -n if sign == "-" else n


def _int_type(bits: int) -> tuple[Callable[[str], int], Callable[[Any], int]]:
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def parse(text: str) -> int:
        try:
            n = _int_from_text(text)
        except ValueError:  # more digits than int() converts: far out of range anyway
            raise _Invalid("out of range") from None
        if n is None:
            raise _Invalid("not an integer")
        if not low <= n <= high:
            raise _Invalid("out of range")
        return n

    def norm(value: Any) -> int:
        if type(value) is int:
            return value
        raise TypeError("integer must be a JSON integer")

    return parse, norm


# numeric: NaN sorts above everything and equals itself, so keys are (is_nan, value) pairs.
_NUMERIC_NAN: tuple[int, Decimal] = (1, Decimal(0))
_NUMERIC_TEXT = re.compile(
    r"[+-]?(?:[0-9](?:_?[0-9])*(?:\.(?:[0-9](?:_?[0-9])*)?)?|\.[0-9](?:_?[0-9])*)"
    r"(?:[eE][+-]?[0-9]+)?"
)
_INFINITIES = {"inf": 1, "+inf": 1, "-inf": -1, "infinity": 1, "+infinity": 1, "-infinity": -1}


def _parse_numeric(text: str) -> tuple[int, Decimal]:
    s = text.strip(_WS)
    low = s.lower()
    if low == "nan":
        return _NUMERIC_NAN
    if low in _INFINITIES:
        return (0, Decimal(_INFINITIES[low]) * Decimal("Infinity"))
    if _NUMERIC_TEXT.fullmatch(s) is None:
        n = _int_from_text(s)  # 0x, 0o, 0b (power-of-two bases: no digit limit)
        if n is None:
            raise _Invalid("not a number")
        return (0, Decimal(n))
    d = Decimal(s.replace("_", ""))
    mantissa, _, exponent = s.lower().partition("e")
    scale = len(mantissa.partition(".")[2].replace("_", "")) - int(exponent or 0)
    if scale > 16383 or (d and d.adjusted() >= 131072):
        raise _Invalid("out of range")
    return (0, d)


def _norm_numeric(value: Any) -> tuple[int, Decimal]:
    t = type(value)
    if t is int:
        return (0, Decimal(value))
    if t is float:
        if value != value:
            return _NUMERIC_NAN
        return (0, Decimal(repr(value)))
    if t is str:
        if value == "NaN":
            return _NUMERIC_NAN
        if value in ("Infinity", "-Infinity"):
            return (0, Decimal(value))
        raise ValueError("not a number")
    if t is Decimal:
        return _NUMERIC_NAN if value.is_nan() else (0, value)
    raise TypeError("numeric must be a JSON number")


# float4/float8: (1, 0.0) for NaN (equal to itself, above everything), (0, value) otherwise.
_FLOAT_NAN: tuple[int, float] = (1, 0.0)
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")


def _f32(x: float) -> float:
    """The float4 nearest to ``x`` (ties to even); OverflowError beyond the float4 range."""
    result: float = _F32.unpack(_F32.pack(x))[0]
    return result


def _f32_step(f: float, up: bool) -> float:
    """The next float4 after the finite float4 ``f``, upwards or downwards."""
    if f == 0:
        return 2.0**-149 if up else -(2.0**-149)
    bits: int = _U32.unpack(_F32.pack(f))[0]
    bits += 1 if (f > 0) == up else -1
    result: float = _F32.unpack(_U32.pack(bits))[0]
    return result


def _float_type(single: bool) -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    def parse(text: str) -> tuple[int, float]:
        s = text.strip(_WS)
        low = s.lower()
        if low in ("nan", "+nan", "-nan"):
            return _FLOAT_NAN
        if low in _INFINITIES:
            return (0, float(_INFINITIES[low]) * float("inf"))
        if _FLOAT_TEXT.fullmatch(s) is None:
            raise _Invalid("not a number")
        exact = Decimal(s)
        d = float(s)  # correctly rounded to double
        if single:
            try:
                f = _f32(d)
            except OverflowError:
                raise _Invalid("out of range") from None
            if f != d:
                # d was rounded once already: if it sits exactly between two float4s, round
                # the exact decimal value instead (PostgreSQL's strtof rounds only once).
                other = _f32_step(f, up=d > f)
                if (f + other) / 2 == d:
                    middle = Decimal(d)
                    if exact != middle:
                        f = other if (exact > middle) == (other > f) else f
            d = f
        if d in (float("inf"), float("-inf")) or (d == 0 and exact != 0):
            raise _Invalid("out of range")
        return (0, d)

    def norm(value: Any) -> tuple[int, float]:
        t = type(value)
        if t is float:
            if value != value:
                return _FLOAT_NAN
            return (0, _f32(value) if single else value)
        if t is int:
            v = float(value)
            return (0, _f32(v) if single else v)
        if t is str:
            if value == "NaN":
                return _FLOAT_NAN
            if value in ("Infinity", "-Infinity"):
                return (0, float(value))
            raise ValueError("not a number")
        raise TypeError("floating-point value must be a JSON number")

    return parse, norm


# Dates and times. Keys: microseconds (timestamps) or days (dates) since 1970-01-01, with
# infinities beyond any real value.
_US_PER_DAY = 86_400_000_000
_TS_INF = 1 << 80
_DATE_INF = 1 << 40
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)

_DATETIME_TEXT = re.compile(
    r"[ \t\n\r\v\f]*(?P<y>[0-9]{4})-(?P<mo>[0-9]{1,2})-(?P<d>[0-9]{1,2})"
    r"(?:(?:[Tt][ \t\n\r\v\f]*|[ \t\n\r\v\f]+)"
    r"(?P<h>[0-9]{1,2}):(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?P<f>\.[0-9]*)?)?"
    r"(?:[ \t\n\r\v\f]*(?P<sign>[+-])(?P<oh>[0-9]{1,2})"
    r"(?::?(?P<om>[0-9]{2})(?::?(?P<os>[0-9]{2}))?)?)?)?"
    r"(?:[ \t\n\r\v\f]*(?P<z>(?i:z|utc|gmt)))?[ \t\n\r\v\f]*"
)
_SPECIAL_DATETIME = {"infinity": 1, "+infinity": 1, "-infinity": -1, "epoch": 0}

# Output of to_jsonb() that datetime.fromisoformat() does not read: BC dates, 5-digit years.
_JSON_DATETIME = re.compile(
    r"([0-9]{4,})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
    r"(?:([+-])([0-9]{2})(?::([0-9]{2})(?::([0-9]{2}))?)?)?)?( BC)?"
)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 in the proleptic Gregorian calendar (astronomical years)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


@dataclass(frozen=True, slots=True)
class _DateTime:
    special: int | None  # 1: infinity, -1: -infinity, None: a real value
    days: int = 0  # since 1970-01-01
    micros: int = 0  # since midnight (may be a full day: 24:00:00)
    offset: int | None = None  # seconds east of UTC; None: no zone given


def _parse_datetime(text: str) -> _DateTime:
    special = _SPECIAL_DATETIME.get(text.strip(_WS).lower())
    if special is not None:
        return _DateTime(special) if special else _DateTime(None, 0, 0, 0)
    m = _DATETIME_TEXT.fullmatch(text)
    if m is None:
        raise _Invalid("not an ISO 8601 date/time")
    year, month, day = int(m["y"]), int(m["mo"]), int(m["d"])
    if year < 1 or not 1 <= month <= 12 or not 1 <= day <= _days_in_month(year, month):
        raise _Invalid("date out of range")
    micros = 0
    if m["h"] is not None:
        hour, minute, second = int(m["h"]), int(m["mi"]), int(m["s"] or 0)
        fraction = m["f"]
        fsec = round(float(fraction) * 1_000_000) if fraction and fraction != "." else 0
        micros = ((hour * 60 + minute) * 60 + second) * 1_000_000 + fsec
        if hour > 24 or minute > 59 or second > 60 or micros > _US_PER_DAY:
            raise _Invalid("time out of range")
    offset = None
    if m["sign"] is not None:
        oh, om, os_ = int(m["oh"]), int(m["om"] or 0), int(m["os"] or 0)
        if oh > 15 or om > 59 or os_ > 59:
            raise _Invalid("time zone offset out of range")
        offset = (oh * 3600 + om * 60 + os_) * (-1 if m["sign"] == "-" else 1)
        if m["z"] is not None:
            raise _Invalid("two time zones")
    elif m["z"] is not None:
        offset = 0
    return _DateTime(None, _days_from_civil(year, month, day), micros, offset)


def _parse_timestamptz(text: str) -> int:
    dt = _parse_datetime(text)
    if dt.special is not None:
        return dt.special * _TS_INF
    return dt.days * _US_PER_DAY + dt.micros - (dt.offset or 0) * 1_000_000


def _parse_timestamp(text: str) -> int:
    dt = _parse_datetime(text)
    if dt.special is not None:
        return dt.special * _TS_INF
    return dt.days * _US_PER_DAY + dt.micros


def _parse_date(text: str) -> int:
    dt = _parse_datetime(text)
    if dt.special is not None:
        return dt.special * _DATE_INF
    return dt.days


def _json_datetime(value: str, with_time: bool) -> tuple[int, int, int]:
    """(days, microseconds of day, offset seconds) of a to_jsonb() date/time string."""
    m = _JSON_DATETIME.fullmatch(value)
    if m is None or (m[4] is None) == with_time:
        raise ValueError("not a date/time")
    year = int(m[1])
    if m[12]:
        year = 1 - year
    days = _days_from_civil(year, int(m[2]), int(m[3]))
    if not with_time:
        return days, 0, 0
    micros = ((int(m[4]) * 60 + int(m[5])) * 60 + int(m[6])) * 1_000_000
    micros += int((m[7] or "").ljust(6, "0"))
    offset = 0
    if m[8]:
        offset = int(m[9]) * 3600 + int(m[10] or 0) * 60 + int(m[11] or 0)
        offset = -offset if m[8] == "-" else offset
    return days, micros, offset


def _norm_timestamptz(value: Any) -> int:
    if type(value) is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            if value == "infinity":
                return _TS_INF
            if value == "-infinity":
                return -_TS_INF
            days, micros, offset = _json_datetime(value, True)
            return days * _US_PER_DAY + micros - offset * 1_000_000
    elif isinstance(value, datetime):
        dt = value
    else:
        raise TypeError("timestamp must be a string")
    if dt.tzinfo is None:
        return (dt - _EPOCH) // _ONE_US
    return (dt - _EPOCH_UTC) // _ONE_US


def _norm_timestamp(value: Any) -> int:
    if type(value) is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            if value == "infinity":
                return _TS_INF
            if value == "-infinity":
                return -_TS_INF
            days, micros, _ = _json_datetime(value, True)
            return days * _US_PER_DAY + micros
    elif isinstance(value, datetime):
        dt = value
    else:
        raise TypeError("timestamp must be a string")
    return (dt.replace(tzinfo=None) - _EPOCH) // _ONE_US


def _norm_date(value: Any) -> int:
    if type(value) is str:
        try:
            return date.fromisoformat(value).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            if value == "infinity":
                return _DATE_INF
            if value == "-infinity":
                return -_DATE_INF
            return _json_datetime(value, False)[0]
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.toordinal() - _EPOCH_ORDINAL
    raise TypeError("date must be a string")


# jsonb: a tagged canonical form, so that 1 and 1.0 are equal, key order does not matter, and
# true is not 1.


def _jsonb_key(value: Any) -> Key:
    if value is None:
        return (0,)
    t = type(value)
    if t is str:
        return (1, value)
    if t is bool:
        return (2, value)
    if t is int or t is Decimal:
        return (3, Decimal(value))
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a JSON number")
        return (3, Decimal(repr(value)))
    if t is list or t is tuple:
        return (4, tuple(_jsonb_key(v) for v in value))
    if t is dict:
        return (5, tuple(sorted((str(k), _jsonb_key(v)) for k, v in value.items())))
    raise TypeError(f"not a JSON value: {t.__name__}")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_json_strings(value: Any) -> None:
    if isinstance(value, str):
        if _FORBIDDEN.search(value):
            raise _Invalid("unsupported Unicode escape sequence")
    elif isinstance(value, list):
        for v in value:
            _check_json_strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_json_strings(k)
            _check_json_strings(v)


def _parse_jsonb(text: str) -> Key:
    try:
        value = json.loads(
            text, parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants
        )
        _check_json_strings(value)
        return _jsonb_key(value)
    except _Invalid:
        raise
    except ValueError:
        raise _Invalid("not JSON") from None
    except RecursionError:
        raise _Invalid("nested too deeply") from None


def _norm_jsonb(value: Any) -> Key:
    try:
        return _jsonb_key(value)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _unsupported_parse(text: str) -> Key:
    raise _Invalid("not supported")


def _unsupported_norm(value: Any) -> Key:
    raise ValueError("json values have no equality")


_TYPES: dict[str, _Type] = {}


def _register(t: _Type, *aliases: str) -> None:
    for name in (t.name, *aliases):
        _TYPES[name] = t


_register(_Type("uuid", "uuid", _parse_uuid, _norm_uuid))
_register(_Type("text", "text", _parse_text, _norm_text, textual=True))
_register(
    _Type("varchar", "character varying", _parse_text, _norm_text, textual=True),
    "character varying",
)
_register(_Type("bool", "boolean", _parse_bool, _norm_bool), "boolean")
_register(_Type("int2", "smallint", *_int_type(16)), "smallint")
_register(_Type("int4", "integer", *_int_type(32)), "integer", "int")
_register(_Type("int8", "bigint", *_int_type(64)), "bigint")
_register(_Type("numeric", "numeric", _parse_numeric, _norm_numeric), "decimal")
_register(_Type("float4", "real", *_float_type(True)), "real")
_register(_Type("float8", "double precision", *_float_type(False)), "double precision")
_register(
    _Type("timestamptz", "timestamp with time zone", _parse_timestamptz, _norm_timestamptz),
    "timestamp with time zone",
)
_register(
    _Type("timestamp", "timestamp without time zone", _parse_timestamp, _norm_timestamp),
    "timestamp without time zone",
)
_register(_Type("date", "date", _parse_date, _norm_date))
_register(_Type("jsonb", "jsonb", _parse_jsonb, _norm_jsonb, ordered=False))
_register(
    _Type("json", "json", _unsupported_parse, _unsupported_norm, equality=False, ordered=False)
)

_TYPMOD = re.compile(r"\(\s*\d+\s*(?:,\s*-?\d+\s*)?\)")


def _canonical_type(pg_type: str) -> str:
    t = _TYPES.get(pg_type)
    if t is not None:
        return t.name
    name = " ".join(_TYPMOD.sub("", pg_type).lower().split())
    t = _TYPES.get(name)
    return t.name if t is not None else name


def normalize(pg_type: str, value: Any) -> Any:
    """The comparable, hashable form of a row value (as decoded from ``to_jsonb``) of a column.

    ``None`` (SQL NULL) stays ``None``. Equal values in PostgreSQL's sense have equal forms, so
    ``Filter.eq_key()[1] == normalize(type, record[column])`` exactly when the ``eq`` condition
    matches. Forms: uuid.UUID (uuid), str (text, varchar), bool, int (integers), ``(0, Decimal)``
    or ``(1, 0)`` for NaN (numeric), ``(0, float)`` or ``(1, 0.0)`` for NaN (real, double),
    microseconds since 1970-01-01 (timestamps; UTC for timestamptz), days since 1970-01-01
    (date), a tagged tuple (jsonb). Raises ValueError or TypeError for a value that cannot be of
    that type, and ValueError for a type without equality or not supported.
    """
    if value is None:
        return None
    t = _TYPES.get(pg_type) or _TYPES.get(_canonical_type(pg_type))
    if t is None or not t.equality:
        raise ValueError(f"values of type {pg_type} are not comparable")
    return t.norm(value)


# -- LIKE ----------------------------------------------------------------------------------------

# Unicode simple lower-casing, as towlower()/ICU do it: str.lower() is the full mapping, which
# differs only for U+0130 (to "i" plus a combining dot) and for a final capital sigma.
_SIMPLE_LOWER = str.maketrans({"\u0130": "i", "\u03a3": "\u03c3"})


def _fold(text: str) -> str:
    return text.translate(_SIMPLE_LOWER).lower()


@dataclass(frozen=True, slots=True)
class _Segment:
    regex: re.Pattern[str]  # fixed-length: literal characters and "." for "_"
    length: int


def _like_segments(pattern: str) -> list[_Segment]:
    """The pattern split at its ``%`` wildcards; each piece matches a fixed number of chars."""
    segments: list[_Segment] = []
    parts: list[str] = []
    length = 0
    i = 0
    while True:
        ch = pattern[i] if i < len(pattern) else "%"
        if ch == "%":
            segments.append(_Segment(re.compile("".join(parts), re.DOTALL), length))
            parts, length = [], 0
            if i >= len(pattern):
                return segments
        elif ch == "\\":
            i += 1
            parts.append(re.escape(pattern[i]))
            length += 1
        else:
            parts.append("." if ch == "_" else re.escape(ch))
            length += 1
        i += 1


def _like_matcher(pattern: str) -> Callable[[str], bool]:
    """LIKE without backtracking: the segments between ``%`` have fixed lengths, so placing
    each as early as possible is optimal. O(len(text) * len(pattern)) at worst."""
    segments = _like_segments(pattern)
    if len(segments) == 1:
        only = segments[0]
        return lambda text: len(text) == only.length and only.regex.match(text) is not None
    first, middle, last = segments[0], segments[1:-1], segments[-1]
    need = sum(s.length for s in segments)
    match_first = first.regex.match if first.length else None
    match_last = last.regex.match if last.length else None
    searches = [s.regex.search for s in middle if s.length]

    def match(text: str) -> bool:
        n = len(text)
        if n < need:
            return False
        if match_first is not None and match_first(text) is None:
            return False
        end = n - last.length
        if match_last is not None and match_last(text, end) is None:
            return False
        pos = first.length
        for search in searches:
            m = search(text, pos, end)
            if m is None:
                return False
            pos = m.end()
        return True

    return match


def _like_pattern(value: str) -> str:
    """PostgREST's ``*`` wildcard as ``%``; a backslash keeps escaping the next character."""
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            if i + 1 == len(value):
                raise _Invalid("a LIKE pattern must not end with an escape character")
            out.append(value[i : i + 2])
            i += 2
            continue
        out.append("%" if ch == "*" else ch)
        i += 1
    return "".join(out)


# -- conditions ----------------------------------------------------------------------------------

Check = Callable[[Any], bool | None]
_ERRORS = (ValueError, TypeError, ArithmeticError)


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``column=[not.]op.value``.

    ``values`` holds the normalized values (see :func:`normalize`; ``None`` for a NULL ``in``
    item), the LIKE pattern (``*`` already turned into ``%``) for like/ilike, and ``None`` /
    ``True`` / ``False`` for ``is``. ``texts`` holds the same values as the text handed to
    PostgreSQL (unquoted and unescaped; not part of equality), ``pg_type`` the column's
    canonical type name. ``evaluate(row_value)`` gives the SQL result: True, False or None.
    """

    column: str
    op: str
    values: tuple[Any, ...]
    negated: bool
    pg_type: str = "text"
    texts: tuple[str | None, ...] = field(default=(), compare=False)
    evaluate: Check = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = _positive(self.op, self.pg_type, self.values)
        if not self.negated:
            object.__setattr__(self, "evaluate", positive)
            return

        def negated(value: Any) -> bool | None:
            result = positive(value)
            return None if result is None else not result

        object.__setattr__(self, "evaluate", negated)


def _positive(op: str, pg_type: str, values: tuple[Any, ...]) -> Check:
    if op == "is":
        wanted = values[0]
        if wanted is None:
            return lambda value: value is None
        return lambda value: value is wanted  # JSON booleans are the bool singletons
    if op in ("like", "ilike"):
        matcher = _like_matcher(_fold(values[0]) if op == "ilike" else values[0])
        fold = op == "ilike"

        def like(value: Any) -> bool | None:
            if type(value) is not str:
                return None
            return matcher(_fold(value) if fold else value)

        return like
    norm = _TYPES[pg_type].norm
    if op == "in":
        if not values:  # x = ANY('{}') is false even for a NULL x
            return lambda value: False
        members = frozenset(v for v in values if v is not None)
        unknown: bool | None = None if None in values else False  # x = ANY('{1,NULL}')

        def within(value: Any) -> bool | None:
            if value is None:
                return None
            try:
                key = norm(value)
            except _ERRORS:
                return None
            return True if key in members else unknown

        return within
    expected = values[0]
    if op == "isdistinct":

        def distinct(value: Any) -> bool | None:
            if value is None:
                return True
            try:
                return bool(norm(value) != expected)
            except _ERRORS:
                return None

        return distinct
    compare = _COMPARISONS[op]

    def check(value: Any) -> bool | None:
        if value is None:
            return None
        try:
            return bool(compare(norm(value), expected))
        except _ERRORS:
            return None

    return check


# -- filters -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """Conditions that must all hold (AND)."""

    conditions: tuple[Condition, ...]
    _plan: tuple[tuple[str, Check], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plan = tuple((c.column, c.evaluate) for c in self.conditions)
        object.__setattr__(self, "_plan", plan)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether the row satisfies every condition (a missing column counts as NULL)."""
        get = record.get
        for column, evaluate in self._plan:
            if evaluate(get(column)) is not True:
                return False
        return True

    def named(self, column: str) -> frozenset[Any] | None:
        """The values a row's ``column`` must be one of for the filter to hold (a positive
        ``eq`` or ``in`` on it, normalized), or None when no such condition bounds it."""
        found: frozenset[Any] | None = None
        for c in self.conditions:
            if c.column == column and not c.negated and c.op in ("eq", "in"):
                values = frozenset(v for v in c.values if v is not None)
                found = values if found is None else found & values
        return found

    def eq_key(self) -> tuple[str, Any] | None:
        """(column, normalized value) when the filter is exactly one non-negated ``eq``."""
        if len(self.conditions) != 1:
            return None
        c = self.conditions[0]
        if c.op != "eq" or c.negated:
            return None
        return (c.column, c.values[0])


def parse_filter(text: str, column_types: Mapping[str, str]) -> Filter:
    """Parse a filter string against the table's columns (name -> PostgreSQL type name).

    Raises FilterError, with a message for the client, when the filter cannot be used.
    """
    if not isinstance(text, str) or not text.strip():
        raise FilterError("empty filter")
    if _FORBIDDEN.search(text):
        raise FilterError("a filter must not contain NUL characters or lone surrogates")
    conditions = tuple(
        _parse_condition(part, text, column_types) for part in _split_conditions(text.strip())
    )
    return Filter(conditions)


def _split_conditions(text: str) -> list[str]:
    """Split at commas outside parentheses and quotes (Supabase Realtime's split_top_level)."""
    parts: list[str] = []
    start = 0
    depth = 0
    quoted = False
    prev = ""
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\" and i + 1 < n:
                prev = text[i + 1]
                i += 2
                continue
            if ch == '"':
                quoted = False
        elif ch == '"':
            quoted = prev in (".", "(", ",")
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
            prev = ""
            i += 1
            continue
        prev = ch
        i += 1
    parts.append(text[start:])
    return parts


def _unquote(raw: str, where: str) -> str:
    if not raw.startswith('"'):
        return raw
    out: list[str] = []
    i = 1
    n = len(raw)
    while i < n:
        ch = raw[i]
        if ch == "\\" and i + 1 < n:
            out.append(raw[i + 1])
            i += 2
        elif ch == '"':
            if i != n - 1:
                raise FilterError(f"unexpected characters after a quoted value in {where}")
            return "".join(out)
        else:
            out.append(ch)
            i += 1
    raise FilterError(f"unterminated quoted value in {where}")


def _in_items(body: str, where: str) -> list[str | None]:
    """The items of ``in.(...)``, read as the elements of a PostgreSQL array literal."""
    if not body.strip(_WS):
        return []
    items: list[str | None] = []
    i = 0
    n = len(body)
    while True:
        while i < n and body[i] in _WS:
            i += 1
        item: str | None
        if i < n and body[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise FilterError(f'unterminated quoted item in the "in" list of {where}')
                ch = body[i]
                if ch == "\\" and i + 1 < n:
                    buf.append(body[i + 1])
                    i += 2
                    continue
                i += 1
                if ch == '"':
                    break
                buf.append(ch)
            while i < n and body[i] in _WS:
                i += 1
            item = "".join(buf)
        else:
            buf = []
            significant = 0
            escaped = False
            while i < n and body[i] != ",":
                ch = body[i]
                if ch == "\\":
                    if i + 1 >= n:
                        raise FilterError(f'a "\\" ends the "in" list of {where}')
                    buf.append(body[i + 1])
                    i += 2
                    escaped = True
                    significant = len(buf)
                    continue
                if ch in '"{}':
                    raise FilterError(
                        f'unexpected {ch} in an unquoted item of the "in" list of {where} '
                        '(quote the item: "...")'
                    )
                buf.append(ch)
                i += 1
                if ch not in _WS:
                    significant = len(buf)
            item = "".join(buf[:significant])
            if not item and not escaped:
                raise FilterError(f'empty item in the "in" list of {where}')
            if not escaped and item.lower() == "null":
                item = None
        items.append(item)
        if i >= n:
            return items
        if body[i] != ",":
            raise FilterError(
                f'unexpected characters after a quoted item in the "in" list of {where}'
            )
        i += 1


def _parse_condition(part: str, text: str, column_types: Mapping[str, str]) -> Condition:
    segment = part.strip()
    if not segment:
        raise FilterError(f'empty condition in filter "{text}" (check for extra commas)')
    where = f'filter "{segment}"'
    column, eq, rest = segment.partition("=")
    if not eq or not column:
        raise FilterError(f"expected column=operator.value in {where}")
    if column not in column_types:
        raise FilterError(f'unknown column "{column}" in {where}')
    negated = rest.startswith("not.")
    if negated:
        rest = rest[4:]
    op, dot, raw = rest.partition(".")
    if op not in OPERATORS:
        if op in ("match", "imatch"):
            raise FilterError(f'operator "{op}" (regular expressions) is not supported in {where}')
        if not dot and not op:
            raise FilterError(f"expected column=operator.value in {where}")
        raise FilterError(f'unknown operator "{op}" in {where} (supported: {", ".join(OPERATORS)})')
    if not dot:
        raise FilterError(f'missing value after operator "{op}" in {where}')
    pg_type = _canonical_type(column_types[column])
    t = _TYPES.get(pg_type)
    label = t.label if t is not None else pg_type

    def not_supported() -> FilterError:
        return FilterError(
            f'operator "{op}" is not supported on column "{column}" of type {label} in {where}'
        )

    def read(value: str) -> Key:
        assert t is not None
        try:
            return t.parse(value)
        except (ValueError, ArithmeticError, RecursionError) as exc:
            reason = exc if isinstance(exc, _Invalid) else "not readable"
            raise FilterError(
                f'invalid value "{value}" for column "{column}" of type {label} in {where}: '
                f"{reason}"
            ) from None

    if op == "is":
        keyword = _unquote(raw, where)
        low = keyword.lower() if keyword.isascii() else keyword
        if low not in _IS_KEYWORDS:
            raise FilterError(
                f'"is" takes null, true, false or unknown, not "{keyword}", in {where}'
            )
        if low != "null" and (t is None or t.name != "bool"):
            raise FilterError(f'"is.{low}" needs a boolean column, in {where}')
        return Condition(column, op, (_IS_KEYWORDS[low],), negated, pg_type, (low,))
    if t is None:
        raise not_supported()
    if op in ("like", "ilike"):
        if not t.textual:
            raise not_supported()
        try:
            pattern = _like_pattern(_unquote(raw, where))
        except _Invalid as exc:
            raise FilterError(f"{exc}, in {where}") from None
        return Condition(column, op, (pattern,), negated, pg_type, (pattern,))
    if not t.equality or (op in _ORDERING and not t.ordered):
        raise not_supported()
    if op == "in":
        if not (len(raw) >= 2 and raw[0] == "(" and raw[-1] == ")"):
            raise FilterError(f'"in" needs a list in parentheses, e.g. in.(a,b), in {where}')
        texts = _in_items(raw[1:-1], where)
        if len(texts) > MAX_IN_VALUES:
            raise FilterError(
                f'too many values in the "in" list (at most {MAX_IN_VALUES}) in {where}'
            )
        values = tuple(None if v is None else read(v) for v in texts)
        return Condition(column, op, values, negated, pg_type, tuple(texts))
    value = _unquote(raw, where)
    return Condition(column, op, (read(value),), negated, pg_type, (value,))
