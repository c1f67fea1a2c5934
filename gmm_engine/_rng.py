"""Reproducible randomness per row, independent of the chunking.

The initialisers draw per-row random numbers (random responsibilities,
exponential race keys) inside chunk functions.  Drawn from one sequential
stream, a row's numbers would depend on which chunk holds it and on the
order the scheduler runs chunks in.  Here they are a function of the
global row index: the rows are cut into fixed blocks of
:data:`RNG_BLOCK_ROWS`, each with its own counter-based Philox generator
keyed by ``(key, stream, block)``, so a chunk draws exactly its rows'
numbers wherever it starts.
"""

from __future__ import annotations

import numpy as np

#: rows per block of the row-indexed random stream
RNG_BLOCK_ROWS = 65_536
#: 64-bit outputs per step of Philox-4x64's counter (``Philox.advance`` steps)
_PHILOX_WORDS = 4


def row_uniforms(key: int, stream: int, start: int, stop: int, ncols: int) -> np.ndarray:
    """Uniform [0, 1) numbers for rows ``start:stop``, a function of the row index.

    Row ``i`` always receives the same ``ncols`` numbers for a given
    ``(key, stream)``, whatever the chunk that contains it: the stream is cut
    into fixed blocks of ``RNG_BLOCK_ROWS`` rows, each drawn from its own
    counter-based Philox generator.

    Parameters
    ----------
    key : int
        64-bit seed of one initialisation.
    stream : int
        Distinguishes the passes that use randomness within it.
    start, stop : int
        Global row range.
    ncols : int

    Returns
    -------
    ndarray of shape (stop - start, ncols)
    """
    out = np.empty((stop - start, ncols))
    first, last = start // RNG_BLOCK_ROWS, (stop - 1) // RNG_BLOCK_ROWS
    for b in range(first, last + 1):
        lo = max(start, b * RNG_BLOCK_ROWS)
        hi = min(stop, (b + 1) * RNG_BLOCK_ROWS)
        bitgen = np.random.Philox(key=[int(key) & (2**64 - 1), (int(stream) << 40) | b])
        # Skip the draws of the block's rows before lo instead of generating
        # them: every double takes one 64-bit output, and one step of
        # Philox's counter makes four.
        skip = (lo - b * RNG_BLOCK_ROWS) * ncols
        bitgen.advance(skip // _PHILOX_WORDS)
        gen = np.random.Generator(bitgen)
        if skip % _PHILOX_WORDS:
            gen.random(skip % _PHILOX_WORDS)
        out[lo - start : hi - start] = gen.random((hi - lo, ncols))
    return out
