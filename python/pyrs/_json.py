"""pyrs's JSON contract in pure Python: the bytes the server sends for a returned dict
or list (README, "JSON"). orjson when importable and its answer cannot differ, else
an encoder that writes exactly what the server's Rust encoder writes."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import struct
import uuid
from typing import Any

try:
    import orjson as _orjson

    _OPTION = _orjson.OPT_SERIALIZE_NUMPY | _orjson.OPT_NON_STR_KEYS
except ImportError:  # pragma: no cover - exercised by the tests without orjson
    _orjson = None  # type: ignore[assignment]
    _OPTION = 0

_MAX_DEPTH = 128
_ESCAPES = {'"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f'}


def dumps(value: Any) -> bytes:
    """The JSON bytes pyrs sends for `value`; ValueError/TypeError as the server's 500s."""
    if _orjson is not None:
        try:
            out = _orjson.dumps(value, None, _OPTION)
        except Exception:
            out = None
        if out is not None and b"null" not in out:
            return out
    parts: list[str] = []
    _value(value, parts, 0, False)
    return "".join(parts).encode("utf-8")


def _str(s: str, out: list[str]) -> None:
    out.append('"')
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')


def _rust_name(v: float) -> str:
    return "NaN" if v != v else ("inf" if v > 0 else "-inf")


def _digits_f32(v: float) -> tuple[str, int]:
    """Shortest digits (and exponent of the first) that read back as the same float32."""
    target = struct.unpack("f", struct.pack("f", v))[0]
    for p in range(0, 10):
        text = f"{abs(target):.{p}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == abs(target):
            mantissa, exp = text.split("e")
            return mantissa.replace(".", "").rstrip("0") or "0", int(exp)
    mantissa, exp = f"{abs(target):.9e}".split("e")  # pragma: no cover
    return mantissa.replace(".", "").rstrip("0") or "0", int(exp)


def _digits_f64(v: float) -> tuple[str, int]:
    text = repr(abs(v))
    mantissa, _, exp = text.partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return "0", 0
    point = len(whole) + (int(exp) if exp else 0)
    lead = len(whole + frac) - len((whole + frac).lstrip("0"))
    return digits.rstrip("0") or "0", point - lead - 1


def _float(v: float, f32: bool, out: list[str]) -> None:
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"{_rust_name(v)} is not valid JSON (NaN and infinities are refused)")
    digits, exp10 = _digits_f32(v) if f32 else _digits_f64(v)
    sign = "-" if math.copysign(1.0, v) < 0 else ""
    if digits == "0":
        out.append(sign + "0.0")
        return
    kk = exp10 + 1  # the decimal point's position after the first digit
    n = len(digits)
    upper = 13 if f32 else 16
    lower = -6 if f32 else -5
    if lower < kk <= 0:
        text = "0." + "0" * (-kk) + digits
    elif 0 < kk <= upper:
        text = digits[:kk] + "." + digits[kk:] if kk < n else digits + "0" * (kk - n) + ".0"
    else:
        e = kk - 1
        text = digits[0] + ("." + digits[1:] if n > 1 else "") + "e" + ("+" if e >= 0 else "-") + str(abs(e))
    out.append(sign + text)


def _value(obj: Any, out: list[str], depth: int, f32: bool) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("JSON nesting is too deep")
    if isinstance(obj, str):
        _str(obj, out)
    elif obj is None:
        out.append("null")
    elif isinstance(obj, bool):
        out.append("true" if obj else "false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        _float(float(obj), f32, out)
    elif isinstance(obj, dict):
        out.append("{")
        for n, (k, v) in enumerate(obj.items()):
            if n:
                out.append(",")
            _key(k, out)
            out.append(":")
            _value(v, out, depth + 1, f32)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for n, v in enumerate(obj):
            if n:
                out.append(",")
            _value(v, out, depth + 1, f32)
        out.append("]")
    else:
        _other(obj, out, depth, f32)


def _other(obj: Any, out: list[str], depth: int, f32: bool) -> None:
    if isinstance(obj, (datetime.datetime, datetime.date)):
        _str(obj.isoformat(), out)
    elif isinstance(obj, datetime.time):
        if obj.tzinfo is not None:
            raise TypeError("datetime.time must not have tzinfo set")
        _str(obj.isoformat(), out)
    elif isinstance(obj, (uuid.UUID, decimal.Decimal)):
        _str(str(obj), out)
    elif isinstance(obj, enum.Enum):
        _value(obj.value, out, depth + 1, f32)
    elif hasattr(type(obj), "__dataclass_fields__"):
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            items = list(attrs.items())
        else:
            items = [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)]
        out.append("{")
        first = True
        for name, v in items:
            if name.startswith("_"):
                continue
            out.append("" if first else ",")
            first = False
            _str(name, out)
            out.append(":")
            _value(v, out, depth + 1, False)
        out.append("}")
    elif type(obj).__module__ == "numpy" and hasattr(obj, "dtype"):
        kind, size = obj.dtype.kind, obj.dtype.itemsize
        plain = obj.astype("datetime64[us]").tolist() if kind == "M" else obj.tolist()
        _value(plain, out, depth + 1, kind == "f" and size <= 4)
    else:
        ty = type(obj)
        raise TypeError(f"Type is not JSON serializable: {ty.__module__}.{ty.__qualname__}")


def _key(k: Any, out: list[str]) -> None:
    if isinstance(k, str):
        _str(k, out)
        return
    scalar = (type(None), bool, int, float)
    if isinstance(k, scalar):
        key: Any = k
    elif isinstance(k, enum.Enum) and isinstance(k.value, (*scalar, str)):
        key = k.value
    elif isinstance(k, (datetime.date, datetime.time)):
        key = k.isoformat()
    elif isinstance(k, uuid.UUID):
        key = str(k)
    else:
        raise TypeError(f"Dict key must a type serializable with OPT_NON_STR_KEYS, not {type(k).__name__}")
    if isinstance(key, str):
        _str(key, out)
        return
    tmp: list[str] = []
    _value(key, tmp, 0, False)
    _str("".join(tmp), out)
