"""Reading .npy files safely from several threads.

NumPy parses every .npy header with ``ast.literal_eval``.  CPython 3.11
builds syntax trees with interpreter-wide state that threads share, and
two threads parsing at once can fail with ``SystemError: AST constructor
recursion depth mismatch`` (python/cpython#106905).  Scoring tasks run in
threads and each reads a model's and a partition's .npy files, so every
header is parsed under one lock; the data itself is read outside it.
"""

from __future__ import annotations

import io
import threading

import numpy as np

#: held while a .npy header (or anything else through ``ast``) is parsed
AST_LOCK = threading.Lock()


def load_npy_bytes(data: bytes) -> np.ndarray:
    """``np.load`` of an in-memory .npy file, no pickles, safe from concurrent threads."""
    with AST_LOCK:
        return np.load(io.BytesIO(data), allow_pickle=False)


def read_npy_header(fh, version):
    """(shape, fortran_order, dtype) of the .npy file ``fh`` positioned after its magic string."""
    with AST_LOCK:
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        return np.lib.format.read_array_header_2_0(fh)
