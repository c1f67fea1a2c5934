"""The column plan: which source columns, under which names, in which dtype.

Everything here is decided from the reader's metadata before any row is
read, so a wrong ``columns``, ``feature_names``, ``dtype`` or
``expected_features`` is refused at once, with nothing written.  The
checks run in this order, and the first failure is the message:

1. ``columns`` -> positions ``sel`` (names or ints; unknown, repeated or
   no columns refused);
2. a selected name repeated in the source (ambiguous for CSV/Parquet);
3. selected non-numeric columns (the fix lists the numeric ones);
4. the output names: ``feature_names``, else the source's names;
5. ``expected_features`` (a fitted model's names): the fix depends on
   what differs and on whether the source has names at all;
6. the output dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .readers import Reader, invalid_names
from .report import IngestError

__all__ = ["Plan", "make_plan"]


@dataclass
class Plan:
    """What to read and how to write it.

    Attributes
    ----------
    sel : list of int
        Source column positions, in output order.
    feature_names : list of str
        One per selected column.
    out_dtype : numpy.dtype
        float32 or float64.
    non_numeric_excluded : list of str
        Non-numeric source columns not selected (for the report).
    source_dtypes : dict of str to str
        Output name -> source type.
    """

    sel: list[int]
    feature_names: list[str]
    out_dtype: np.dtype
    non_numeric_excluded: list[str]
    source_dtypes: dict[str, str]


def make_plan(reader: Reader, columns, feature_names, dtype, expected_features) -> Plan:
    """Check the options against ``reader``'s metadata and return the :class:`Plan`.

    Raises
    ------
    IngestError
        The first problem found, in the order of the module docstring.
    """
    sel = _select(reader, columns)
    _check_selection(reader, sel)
    names = _feature_names(reader, sel, feature_names, expected_features)
    if expected_features is not None:
        _check_expected(names, expected_features, reader, feature_names is not None)
    kept = set(sel)
    return Plan(
        sel=sel,
        feature_names=names,
        out_dtype=_resolve_dtype(dtype, reader, sel),
        non_numeric_excluded=[
            reader.names[i] for i in range(len(reader.names))
            if i not in kept and reader.kinds[i] is None
        ],
        source_dtypes={n: reader.types[i] for n, i in zip(names, sel)},
    )


def _fmt_list(items, max_n=20):
    items = list(items)
    more = f" ... (+{len(items) - max_n} more)" if len(items) > max_n else ""
    return repr(items[:max_n]) + more


def _select(reader, columns) -> list[int]:
    names = reader.names
    if columns is None:
        return list(range(len(names)))
    if isinstance(columns, (str, bytes)) or not hasattr(columns, "__iter__"):
        raise IngestError(
            f"columns must be a list of column names, got {columns!r}; "
            f"pass columns=[{columns!r}] for a single column."
        )
    columns = list(columns)
    sel, unknown = [], []
    for c in columns:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if 0 <= int(c) < len(names):
                sel.append(int(c))
            else:
                unknown.append(c)
        elif c in names:
            sel.append(names.index(c))
        else:
            unknown.append(c)
    if unknown:
        raise IngestError(
            f"columns {_fmt_list(unknown)} are not in {reader.loc.text}; its columns are "
            f"{_fmt_list(names)}. Pass names from that list."
        )
    dup = sorted({names[i] for i in sel if sel.count(i) > 1})
    if dup:
        raise IngestError(f"columns lists {dup!r} more than once; list each column once.")
    if not sel:
        raise IngestError("columns is empty; list at least one numeric column.")
    return sel


def _check_selection(reader, sel) -> None:
    """Refuse selected columns whose name repeats in the source, then non-numeric ones."""
    src = reader.loc.text
    # CSV and Parquet columns are read by name, so a repeated name is ambiguous.
    repeated = sorted({reader.names[i] for i in sel if reader.names.count(reader.names[i]) > 1})
    if repeated:
        raise IngestError(
            f"Column names {_fmt_list(repeated)} appear more than once in {src}; "
            "rename the columns in the source so each name is unique, or leave them "
            "out with columns=[...]."
        )
    if any(reader.kinds[i] is None for i in sel):
        kinds = ", ".join(f"{reader.names[i]!r} ({reader.types[i]})" for i in sel
                          if reader.kinds[i] is None)
        numeric = [reader.names[i] for i in range(len(reader.names)) if reader.kinds[i]]
        raise IngestError(
            f"Non-numeric columns in {src}: {kinds}. Pass columns=[...] with numeric "
            f"columns only (numeric here: {_fmt_list(numeric)}), or encode these columns "
            "as numbers first."
        )


def _feature_names(reader, sel, feature_names, expected_features) -> list[str]:
    """The output names: ``feature_names`` if given, else the selected source names."""
    src = reader.loc.text
    if feature_names is None:
        if reader.names_problem:
            raise IngestError(f"{reader.names_problem}. Pass feature_names=[...].")
        names = [reader.names[i] for i in sel]
        problem = invalid_names(names, len(sel))
        if problem:
            raise IngestError(
                f"The column names of {src} cannot be feature names: {problem}. Pass "
                "feature_names=[...] (one per selected column), or fix the header."
            )
        return names
    if isinstance(feature_names, str):
        raise IngestError(f"feature_names must be a list of strings, got {feature_names!r}.")
    names = list(feature_names)
    if (expected_features is not None and names == list(expected_features)
            and len(names) != len(sel)):
        # positional naming (a .npy or unnamed Zarr partition scored with
        # the model's names): the real problem is the column count
        raise IngestError(
            f"Feature count mismatch: {src} has {len(sel)} columns, expected_features lists "
            f"{len(names)}. Its columns carry no names and are taken by position: ingest "
            f"a source with exactly these features, in this order: {_fmt_list(names, 50)}."
        )
    problem = invalid_names(names, len(sel))
    if problem:
        raise IngestError(
            f"feature_names is invalid: {problem}. Pass one unique non-empty name per "
            f"selected column ({len(sel)})."
        )
    return names


def _check_expected(got, expected, reader, names_given):
    expected = list(expected)
    problem = invalid_names(expected, len(expected))
    if problem:
        raise IngestError(f"expected_features is invalid: {problem}.")
    if got == expected:
        return
    src = reader.loc.text
    count = f"{src} has {len(got)} selected features, expected_features lists {len(expected)}"
    if reader.format == "npy" and not names_given and len(got) != len(expected):
        raise IngestError(
            f"Feature count mismatch: {count}. A .npy file has no column names, so its "
            "columns cannot be matched by name: ingest a file with exactly these "
            f"features, in this order: {_fmt_list(expected)}."
        )
    missing = [e for e in expected if e not in got]
    unexpected = [g for g in got if g not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_fmt_list(missing)}")
    if unexpected:
        parts.append(f"unexpected {_fmt_list(unexpected)}")
    if not parts:
        parts.append(f"same names in a different order: got {_fmt_list(got)}")
    raise IngestError(
        f"Feature names of {src} do not match expected_features: {'; '.join(parts)} "
        f"({count}). Expected order: {_fmt_list(expected, 50)}. "
        f"Fix: {_expected_fix(expected, reader, names_given, bool(missing), len(got))}."
    )


def _expected_fix(expected, reader, names_given, missing, n_got) -> str:
    """How to make the source match ``expected`` features."""
    if not missing and not names_given:
        return f"pass columns={_fmt_list(expected, 50)} to select and order them"
    if reader.format in ("npy", "zarr") and not names_given and n_got == len(expected):
        return (
            "if the columns are these features in this order, name them with "
            "feature_names=[...]; otherwise ingest a source with these features"
        )
    return (
        "ingest a source that has exactly these features (this one does not match "
        "the features the model was fitted on)"
    )


def _resolve_dtype(dtype, reader, sel) -> np.dtype:
    if dtype is None:
        return np.dtype(
            np.float32 if all(reader.kinds[i] == "float32" for i in sel) else np.float64
        )
    try:
        out = np.dtype(dtype)
    except TypeError:
        out = None
    if out not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise IngestError(
            f"dtype must be 'float32' or 'float64', got {dtype!r}. "
            "Leave it unset to keep float32 sources in float32 and use float64 otherwise."
        )
    return out
