"""Column conversion to float, exactly or not at all.

Every reader hands its columns to these functions, which write them into
a ``(rows, D)`` output block of ``float32`` or ``float64`` and refuse what
the conversion would silently change:

* an integer the output dtype cannot hold exactly (beyond 2**24 for
  float32, 2**53 for float64), from Arrow, NumPy or a CSV literal;
* a finite float64 that would overflow to infinity in float32.

Missing values (Arrow nulls, empty or ``NA`` CSV cells) become NaN, so the
rows count as bad downstream.  CSV text columns parsed tolerantly also
report which cells were not numbers at all (the *unparseable* mask).

A column's *kind* says how it converts: ``'int'``, ``'float'``,
``'float32'``, ``'bool'``, ``'null'``, ``'decimal'``, ``'text-number'``
(a CSV text column of mostly numbers) or None (non-numeric).
"""

from __future__ import annotations

import numpy as np

from .report import IngestError

# A decimal or scientific number, or inf/nan, after whitespace is trimmed;
# used only when pyarrow's own cast rejects some cell of a column.
FLOAT_RE = r"^[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity|nan)$"
_TRUE_TEXT = ("1", "true")
_FALSE_TEXT = ("0", "false")


# ---------------------------------------------------------------------------
# exactness checks


def _first_inexact_int(v: np.ndarray, out_dtype: np.dtype):
    """Index of the first integer in ``v`` that ``out_dtype`` cannot hold exactly, or None."""
    if v.size == 0:
        return None
    limit = 2 ** (np.finfo(out_dtype).nmant + 1)  # every |int| <= limit is exact
    if int(v.min()) >= -limit and int(v.max()) <= limit:
        return None
    f = v.astype(out_dtype)
    # Round-trip; values that round to 2**63 (2**64 for uint64) cannot cast back.
    top = 2.0**64 if v.dtype.kind == "u" else 2.0**63
    big = f.astype(np.float64) >= top
    back = np.where(big, 0, f).astype(v.dtype)
    bad = big | (back != v)
    return int(np.argmax(bad)) if bad.any() else None


def _inexact_int_error(name, value, row, out_dtype) -> IngestError:
    fix = (
        "pass dtype='float64' (or leave dtype unset), or "
        if out_dtype == np.float32 and abs(int(value)) <= 2**53
        else ""
    )
    return IngestError(
        f"Column {name!r} holds the integer {int(value)} (row {row}), which "
        f"{np.dtype(out_dtype).name} cannot represent exactly: converting would "
        f"silently change it. Fix: {fix}leave the column out with columns=[...] "
        "(identifiers are not features), or rescale it in the source."
    )


def _check_ints(v, name, out_dtype, row0):
    i = _first_inexact_int(v, out_dtype)
    if i is not None:
        raise _inexact_int_error(name, v[i], row0 + i, out_dtype)


def _check_no_overflow(src, out_col, name, row0):
    """Refuse finite source values that became +/-inf in a narrower dtype."""
    new_inf = np.isinf(out_col) & np.isfinite(src)
    if new_inf.any():
        i = int(np.argmax(new_inf))
        raise IngestError(
            f"Column {name!r} holds {float(src[i])!r} (row {row0 + i}), beyond the "
            f"range of {out_col.dtype.name}: converting would turn it into infinity. "
            "Fix: pass dtype='float64' (or leave dtype unset)."
        )


def _store_float(out, j, v, name, row0):
    with np.errstate(over="ignore"):  # overflow is detected and refused below
        out[:, j] = v
    if v.dtype.itemsize > out.dtype.itemsize:
        _check_no_overflow(v, out[:, j], name, row0)


# ---------------------------------------------------------------------------
# CSV text


def _parse_bool_text(text, out, j):
    """``true``/``1`` and ``false``/``0`` (any case) into ``out[:, j]``; the unparseable mask."""
    import pyarrow as pa
    import pyarrow.compute as pc

    is_null = text.is_null().to_numpy(zero_copy_only=False)
    low = pc.utf8_lower(text)
    t = pc.is_in(low, value_set=pa.array(_TRUE_TEXT)).to_numpy(zero_copy_only=False)
    f = pc.is_in(low, value_set=pa.array(_FALSE_TEXT)).to_numpy(zero_copy_only=False)
    unparseable = ~(t | f | is_null)
    out[:, j] = np.where(t, 1.0, 0.0)
    out[is_null | unparseable, j] = np.nan
    return unparseable if unparseable.any() else None


def _cast_text_to_float(text):
    """``(float64 Arrow array, unparseable mask or None)``: non-numbers become nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        return pc.cast(text, pa.float64()), None
    except pa.ArrowInvalid:
        pass
    ok = pc.fill_null(pc.match_substring_regex(text, FLOAT_RE, ignore_case=True), True)
    cleaned = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    unparseable = ~ok.to_numpy(zero_copy_only=False)
    try:
        return pc.cast(cleaned, pa.float64()), unparseable
    except pa.ArrowInvalid:
        pass
    # The regex let through a form pyarrow rejects; parse those cells in Python.
    py = []
    for k, s in enumerate(cleaned.to_pylist()):
        try:
            py.append(float(s) if s is not None else None)
        except ValueError:
            py.append(None)
            unparseable[k] = True
    return pa.array(py, pa.float64()), unparseable


def _check_long_int_literals(text, name, out_dtype, row0):
    """Refuse integer literals too long to survive the conversion to ``out_dtype``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    digits = np.finfo(out_dtype).precision  # 15 (float64) or 6 (float32): always exact
    long_int = pc.fill_null(
        pc.match_substring_regex(text, rf"^[+-]?\d{{{digits + 1},}}$"), False
    ).to_numpy(zero_copy_only=False)
    if not long_int.any():
        return
    idx = np.flatnonzero(long_int)
    sub = pc.take(text, pa.array(idx))
    try:
        ints = pc.cast(sub, pa.int64()).to_numpy()
        k = _first_inexact_int(ints, out_dtype)
        if k is not None:
            raise _inexact_int_error(name, ints[k], row0 + int(idx[k]), out_dtype)
    except pa.ArrowInvalid:  # beyond int64
        for k, s in zip(idx, sub.to_pylist()):
            exact = float(s) if out_dtype == np.float64 else float(np.float32(float(s)))
            if not np.isfinite(exact) or int(exact) != int(s):
                raise _inexact_int_error(name, int(s), row0 + int(k), out_dtype) from None


def _parse_text_column(arr, kind, name, out, j, row0):
    """Parse a CSV text column into ``out[:, j]``; return the unparseable-cell mask.

    Nulls (empty cells, ``NA``, ``nan``...) become NaN; cells that are not
    numbers become NaN and are flagged, so the rows count as bad.
    """
    import pyarrow.compute as pc

    text = pc.utf8_trim_whitespace(arr)
    if kind == "bool":
        return _parse_bool_text(text, out, j)
    values, unparseable = _cast_text_to_float(text)
    v = values.to_numpy(zero_copy_only=False)
    _check_long_int_literals(text, name, out.dtype, row0)
    _store_float(out, j, v, name, row0)
    if unparseable is not None and unparseable.any():
        return unparseable
    return None


# ---------------------------------------------------------------------------
# Arrow and NumPy columns


def arrow_column(arr, kind, name, out, j, row0, tolerant):
    """Convert one Arrow column into ``out[:, j]``; return the unparseable mask or None.

    Parameters
    ----------
    arr : pyarrow.Array or pyarrow.ChunkedArray
        Rows ``row0 ..`` of the column ``name``.
    kind : str
        The column's kind (see the module docstring).
    out : ndarray of shape (rows, D)
        The output block; column ``j`` is written.
    tolerant : bool
        ``arr`` is CSV text to parse cell by cell (non-numbers flagged).

    Raises
    ------
    IngestError
        An inexact integer or a float32 overflow.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if tolerant and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return _parse_text_column(arr, kind, name, out, j, row0)
    nulls = _null_mask(arr)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        v = _primitive_values(arr, nulls)
        if pa.types.is_integer(t):
            _check_ints(v, name, out.dtype, row0)
        out[:, j] = v
    elif pa.types.is_floating(t):
        _store_float(out, j, _primitive_values(arr, nulls), name, row0)
    elif pa.types.is_null(t):
        out[:, j] = np.nan
    elif pa.types.is_decimal(t):
        as_float = pc.cast(arr, pa.float64())
        _store_float(out, j, _primitive_values(as_float, _null_mask(as_float)), name, row0)
    else:  # pragma: no cover - excluded when planning
        raise IngestError(f"Column {name!r} has non-numeric type {t}.")
    if nulls is not None:
        out[nulls, j] = np.nan
    return None


def _null_mask(arr) -> np.ndarray | None:
    """Where a pyarrow Array is null, from its validity bitmap (None without nulls)."""
    if not arr.null_count:
        return None
    n, off = len(arr), arr.offset
    validity = arr.buffers()[0]
    if validity is None:  # an all-null column (Arrow's null type) has no bitmap
        return np.ones(n, dtype=bool)
    valid = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")[off:off + n]
    return valid == 0


def _primitive_values(arr, nulls) -> np.ndarray:
    """The values of an integer, floating or boolean pyarrow Array as NumPy, 0 (False) where null.

    Read from the array's data buffer: pyarrow's own ``to_numpy`` and
    ``fill_null`` import pandas on their first call, ~0.25-0.4 s of every
    ``gmm ingest`` and ``gmm score`` of a CSV or Parquet source, and pandas
    is used for nothing else.  The values stay exact (a view of the buffer,
    or a copy with the null slots cleared, whose contents Arrow leaves
    unspecified).
    """
    import pyarrow as pa

    t, n, off = arr.type, len(arr), arr.offset
    data = arr.buffers()[1]
    if pa.types.is_boolean(t):  # bit-packed, least significant bit first
        v = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[off:off + n].astype(bool)
    else:
        code = "f" if pa.types.is_floating(t) else ("i" if pa.types.is_signed_integer(t) else "u")
        dtype = np.dtype(f"{code}{t.bit_width // 8}")
        v = np.frombuffer(data, dtype, count=n, offset=off * dtype.itemsize)
        v.flags.writeable = False  # a view of Arrow's buffer
    if nulls is not None:
        v = v.copy()
        v[nulls] = 0
    return v


def numpy_block(block, names, out_dtype, row0):
    """Convert a (rows, D) NumPy block of a numeric dtype to ``out_dtype``, exactly."""
    kind = block.dtype.kind
    if kind in "iu":
        for j in range(block.shape[1]):
            _check_ints(block[:, j], names[j], out_dtype, row0)
    out = np.empty(block.shape, dtype=out_dtype)
    with np.errstate(over="ignore"):  # overflow is detected and refused below
        out[...] = block
    if kind == "f" and block.dtype.itemsize > out.dtype.itemsize:
        for j in range(block.shape[1]):
            _check_no_overflow(block[:, j], out[:, j], names[j], row0)
    return out


# ---------------------------------------------------------------------------
# kinds and type names


def arrow_type_name(t) -> str:
    """NumPy's name for numeric Arrow types (``double`` -> ``float64``), else Arrow's."""
    import pyarrow as pa

    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return np.dtype(t.to_pandas_dtype()).name
    return str(t)


def arrow_kind(t) -> str | None:
    """How an Arrow type converts to float, or None if it is non-numeric."""
    import pyarrow as pa

    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float32" if t == pa.float32() else "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_decimal(t):
        return "decimal"
    return None


def numpy_kind(dt: np.dtype) -> str | None:
    """How a NumPy dtype converts to float, or None if it is non-numeric."""
    if dt.kind in "iu":
        return "int"
    if dt.kind == "f":
        return "float32" if dt.itemsize == 4 else "float"  # any byte order
    if dt.kind == "b":
        return "bool"
    return None
