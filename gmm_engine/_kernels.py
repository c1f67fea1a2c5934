"""Fused per-chunk kernels (numba, GIL released, cached).

Each E-step kernel makes one pass over a chunk in blocks of rows and, per
block, computes the weighted log-probability of every component, their
log-sum-exp, the responsibilities, and adds the block to the sufficient
statistics around the current means.  The block stays in L1/L2 cache
between the steps.

Why the code looks like a BLAS micro-kernel
-------------------------------------------
The arithmetic of ``full`` is two triangular products per row and
component (whitening ``y = (x - mu_k) U_k`` and the scatter
``r (x - mu_k)(x - mu_k)^T``), ~D^2 multiply-adds each.  Tall-skinny BLAS
calls run at ~3 GFLOP/s on these machines and plain numba loops at ~5,
because both keep partial sums in memory.  The kernels here use the
register-wide vectors of :mod:`._simd` (W = 8 float64 lanes with AVX-512,
4 with AVX2) and keep a tile of eight vector accumulators in registers over
the inner loop:

* whitening, lanes = rows: the block is transposed (``xT`` is (Dp, BR)), so
  ``y_b`` for W rows is one vector and the triangle of ``U_k`` is
  walked exactly, four columns at a time, for two groups of W rows;
* scatter, lanes = features: ``Q[a0:a0+8, Wv:Wv+W] += sum_rows
  (r d)[row, a] d[row, Wv:Wv+W]`` with one broadcast load and one fused
  multiply-add per accumulator, over the rows of the block;
* exp and log run W lanes at a time (:func:`._simd.vexp_neg`,
  :func:`._simd.vlog_ge1`).

Numerics
--------
Arithmetic is float64 whatever the input dtype.  Differences are taken
around the current means (``x - mu_k``) before any product, so data far
from the origin keeps its precision; statistics are accumulated around
the same means.  Responsibilities below ``TINY`` are zero, as are products
with them (no subnormal arithmetic).  For ``full`` and ``tied`` a row
whose responsibility for component k is below ``SKIP_REL * w_k`` is left
out of that component's sums and scatter (not of its soft count): the
mass left out of any statistic is below ``SKIP_REL`` times the
component's previous soft count, far below float64 rounding of the
totals (see ``_kernel_params.KernelParams``).

Conventions shared by every kernel:

* ``X`` has shape (n, D), float32 or float64, any layout.
* Parameters are padded to ``Dp`` features (a multiple of 8) with zeros:
  ``means_p`` (K, Dp), precision factors (K, Dp, Dp) or (Dp, Dp) or
  precisions (K, Dp).  ``logc[k] = log w_k + log|U_k| - D/2 log(2 pi)``.
* Statistics are accumulated in place into float64 arrays that the caller
  zeroed: ``nk`` (K,), ``sums`` (K, D) and a type-specific ``scatter``.
  Only the upper triangle of a full scatter is written; the caller
  mirrors it.
* E-step kernels take row weights ``wt`` (n,) float64, or an empty array
  for unit weights, and multiply every row's responsibilities and
  log-likelihood by its weight (``sample_weight``).  They can also write
  what scoring needs of every row into ``rows`` (n, 3): ``log p(x)``, the
  most likely component and its responsibility, from the same pass (an
  empty (0, 3) array asks for nothing).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._simd import (
    CACHE,
    W,
    vadd,
    vbcast,
    vdiv,
    vexp_neg,
    vfma,
    vhsum,
    viota,
    vload,
    vlog_ge1,
    vmax,
    vmul,
    vselect_ge,
    vsplat,
    vstore,
    vsub,
    vzero,
)

_OPTS = dict(nogil=True, cache=CACHE, error_model="numpy", fastmath={"contract"})

#: responsibilities below this are zero (keeps products out of subnormals)
TINY = 1e-300
#: full/tied: rows with r < SKIP_REL * w_k skip component k's sums and scatter
SKIP_REL = 1e-20


#: rows of a scatter tile (eight accumulators); features are padded to a multiple of it
TILE = 8


def padded_features(D: int) -> int:
    """Features rounded up to whole scatter tiles (a multiple of 8, so of the vector width too)."""
    return ((D + TILE - 1) // TILE) * TILE


@njit(**_OPTS)
def block_rows(Dp):
    """Rows per block: a multiple of 16 that keeps the block buffers in L1/L2."""
    if Dp <= 32:
        return 64
    if Dp <= 128:
        return 32
    return 16


# ---------------------------------------------------------------------------
# Block loading


@njit(**_OPTS)
def _load_rows(X, i0, m, D, xb):
    """Rows ``i0 .. i0 + m`` of X into the row-major float64 block ``xb`` (BR, Dp)."""
    for i in range(m):
        for a in range(D):
            xb[i, a] = X[i0 + i, a]
    for i in range(m, xb.shape[0]):
        for a in range(D):
            xb[i, a] = 0.0


@njit(**_OPTS)
def _load_cols(X, i0, m, D, xT):
    """Rows ``i0 .. i0 + m`` of X into the transposed float64 block ``xT`` (Dp, BR)."""
    BR = xT.shape[1]
    for i in range(m):
        for a in range(D):
            xT[a, i] = X[i0 + i, a]
    for a in range(D):
        for i in range(m, BR):
            xT[a, i] = 0.0


@njit(**_OPTS)
def _load_weights(wt, i0, m, WB):
    """Row weights of a block into ``WB`` (BR,): ``wt[i0 : i0 + m]``, or ones when ``wt`` is empty.

    Padding rows ``>= m`` get weight 0, which is what marks them invalid
    in :func:`_responsibilities`.
    """
    if wt.shape[0] == 0:
        for i in range(m):
            WB[i] = 1.0
    else:
        for i in range(m):
            WB[i] = wt[i0 + i]
    for i in range(m, WB.shape[0]):
        WB[i] = 0.0


@njit(**_OPTS)
def _center_cols(xT, center, coff, D, dT):
    """``dT[a] = xT[a] - center[coff + a]`` for the first D rows (lanes = block rows)."""
    BR = xT.shape[1]
    for a in range(D):
        c = vbcast(center, coff + a)
        for o in range(0, BR, W):
            vstore(dT, a * BR + o, vsub(vload(xT, a * BR + o), c))


# ---------------------------------------------------------------------------
# Whitening, lanes = rows


@njit(**_OPTS)
def _maha_cols(dT, U, uoff, D, Dp, out, ooff, logc_k):
    """``out[ooff + i] = logc_k - |dT[:, i] @ U|^2 / 2`` for every row i of the block.

    ``U`` is upper triangular, read at flat offset ``uoff`` with row
    stride Dp; four of its columns and sixteen rows are done at a time.
    """
    BR = dT.shape[1]
    half = vsplat(-0.5)
    c = vsplat(logc_k)
    for o in range(0, BR, 2 * W):
        m0 = vzero()
        m1 = vzero()
        for b0 in range(0, D, 4):
            y0 = vzero()
            y1 = vzero()
            y2 = vzero()
            y3 = vzero()
            z0 = vzero()
            z1 = vzero()
            z2 = vzero()
            z3 = vzero()
            for a in range(min(b0 + 4, D)):
                va = vload(dT, a * BR + o)
                vb = vload(dT, a * BR + o + W)
                uo = uoff + a * Dp + b0
                u0 = vbcast(U, uo)
                u1 = vbcast(U, uo + 1)
                u2 = vbcast(U, uo + 2)
                u3 = vbcast(U, uo + 3)
                y0 = vfma(va, u0, y0)
                y1 = vfma(va, u1, y1)
                y2 = vfma(va, u2, y2)
                y3 = vfma(va, u3, y3)
                z0 = vfma(vb, u0, z0)
                z1 = vfma(vb, u1, z1)
                z2 = vfma(vb, u2, z2)
                z3 = vfma(vb, u3, z3)
            m0 = vfma(y0, y0, m0)
            m0 = vfma(y1, y1, m0)
            m0 = vfma(y2, y2, m0)
            m0 = vfma(y3, y3, m0)
            m1 = vfma(z0, z0, m1)
            m1 = vfma(z1, z1, m1)
            m1 = vfma(z2, z2, m1)
            m1 = vfma(z3, z3, m1)
        vstore(out, ooff + o, vfma(half, m0, c))
        vstore(out, ooff + o + W, vfma(half, m1, c))


@njit(**_OPTS)
def _whiten_cols(dT, U, D, Dp, yT):
    """``yT[b] = (dT^T @ U)[:, b]`` for b < D (lanes = block rows); U is (Dp, Dp) upper."""
    BR = dT.shape[1]
    for o in range(0, BR, 2 * W):
        for b0 in range(0, D, 4):
            y0 = vzero()
            y1 = vzero()
            y2 = vzero()
            y3 = vzero()
            z0 = vzero()
            z1 = vzero()
            z2 = vzero()
            z3 = vzero()
            for a in range(min(b0 + 4, D)):
                va = vload(dT, a * BR + o)
                vb = vload(dT, a * BR + o + W)
                uo = a * Dp + b0
                u0 = vbcast(U, uo)
                u1 = vbcast(U, uo + 1)
                u2 = vbcast(U, uo + 2)
                u3 = vbcast(U, uo + 3)
                y0 = vfma(va, u0, y0)
                y1 = vfma(va, u1, y1)
                y2 = vfma(va, u2, y2)
                y3 = vfma(va, u3, y3)
                z0 = vfma(vb, u0, z0)
                z1 = vfma(vb, u1, z1)
                z2 = vfma(vb, u2, z2)
                z3 = vfma(vb, u3, z3)
            p = b0 * BR + o
            vstore(yT, p, y0)
            vstore(yT, p + W, z0)
            vstore(yT, p + BR, y1)
            vstore(yT, p + BR + W, z1)
            vstore(yT, p + 2 * BR, y2)
            vstore(yT, p + 2 * BR + W, z2)
            vstore(yT, p + 3 * BR, y3)
            vstore(yT, p + 3 * BR + W, z3)


# ---------------------------------------------------------------------------
# Responsibilities, lanes = rows


@njit(**_OPTS)
def _responsibilities(LPT, K, RT, NKv, WB, LLB):
    """Log-sum-exp over components and weighted responsibilities for a block.

    ``LPT`` (K, BR) holds weighted log-probabilities and ``WB`` (BR,) the
    row weights (0 for padding rows).  ``RT`` (K, BR) receives ``w_i r_ik``
    (zero where ``r_ik`` is below ``TINY`` or ``w_i`` is 0), ``NKv`` (K, W)
    their per-lane sums and ``LLB`` (BR,) every row's ``log p(x_i)``
    (``-inf`` for a row whose every log-probability is ``-inf``).  Returns
    the per-lane sums of ``w_i log p(x_i)`` over rows of positive weight.
    With unit weights every product with ``w_i`` is exact, so unweighted
    statistics are those of the plain E-step bit for bit.
    """
    BR = LPT.shape[1]
    llv = vzero()
    one = vsplat(1.0)
    zero = vzero()
    tiny = vsplat(TINY)
    minpos = vsplat(5e-324)
    for o in range(0, BR, W):
        wv = vload(WB, o)
        mx = vload(LPT, o)
        for k in range(1, K):
            mx = vmax(mx, vload(LPT, k * BR + o))
        s = vzero()
        for k in range(K):
            # exp(-inf - -inf) is NaN, which vexp_neg maps to 0
            e = vexp_neg(vsub(vload(LPT, k * BR + o), mx))
            vstore(RT, k * BR + o, e)
            s = vadd(s, e)
        # s >= 1 wherever the maximum is finite (its own term is exp(0))
        lls = vadd(mx, vlog_ge1(vselect_ge(s, one, s, one)))
        lls = vselect_ge(s, one, lls, vsplat(-np.inf))
        vstore(LLB, o, lls)
        # a row of weight 0 adds nothing, even when its log-likelihood is -inf
        llv = vadd(llv, vselect_ge(wv, minpos, vmul(lls, wv), zero))
        inv = vselect_ge(s, one, vselect_ge(wv, minpos, vdiv(one, s), zero), zero)
        for k in range(K):
            r = vmul(vload(RT, k * BR + o), inv)
            r = vmul(vselect_ge(r, tiny, r, zero), wv)
            vstore(RT, k * BR + o, r)
            vstore(NKv, k * W, vadd(vload(NKv, k * W), r))
    return llv


@njit(**_OPTS)
def _emit_scores(LPT, LLB, i0, m, rows):
    """Per row: ``log p(x)``, the most likely component (lowest on ties) and its responsibility.

    ``rows`` (n, 3); an empty ``rows`` (0, 3) asks for nothing.
    """
    if rows.shape[0] == 0:
        return
    K = LPT.shape[0]
    for i in range(m):
        best = LPT[0, i]
        arg = 0
        for k in range(1, K):
            if LPT[k, i] > best:
                best = LPT[k, i]
                arg = k
        rows[i0 + i, 0] = LLB[i]
        rows[i0 + i, 1] = arg
        rows[i0 + i, 2] = np.exp(best - LLB[i])


# ---------------------------------------------------------------------------
# Scatter, lanes = features


@njit(**_OPTS)
def _scatter_rows(xb, m, means_p, k, resp, WB, rmin, D, dc, rdc, Q, qoff, S, soff):
    """Add ``sum_i r_i (x_i - mu_k)`` and its upper-triangular scatter for one component.

    ``resp`` (BR,) holds the block's weighted responsibilities for
    component k and ``WB`` (BR,) the row weights.  Rows with
    ``resp[i] < rmin * WB[i]`` (an unweighted responsibility below
    ``rmin``) or ``resp[i] == 0`` are left out; the others are packed
    into ``dc`` (differences) and ``rdc`` (responsibility times
    differences), both (BR, Dp) row-major.  ``Q`` receives the scatter at
    flat offset ``qoff`` with row stride Dp, ``S`` the sums at ``soff``.
    """
    Dp = xb.shape[1]
    nv = Dp // W
    c = 0
    for i in range(m):
        r = resp[i]
        if r > 0.0 and r >= rmin * WB[i]:
            vr = vsplat(r)
            for v in range(nv):
                t = vsub(vload(xb, i * Dp + W * v), vload(means_p, k * Dp + W * v))
                vstore(dc, c * Dp + W * v, t)
                vstore(rdc, c * Dp + W * v, vmul(vr, t))
            c += 1
    if c == 0:
        return
    if W == 4:  # a compile-time constant: one of the two tilings is compiled
        _scatter_tiles_4x2(dc, rdc, c, D, Dp, Q, qoff, S, soff)
        return
    # first row tile: also the sums
    for v in range(nv):
        q0 = vzero()
        q1 = vzero()
        q2 = vzero()
        q3 = vzero()
        q4 = vzero()
        q5 = vzero()
        q6 = vzero()
        q7 = vzero()
        sa = vzero()
        for j in range(c):
            ro = j * Dp
            u = vload(dc, ro + W * v)
            sa = vadd(sa, vload(rdc, ro + W * v))
            q0 = vfma(vbcast(rdc, ro), u, q0)
            q1 = vfma(vbcast(rdc, ro + 1), u, q1)
            q2 = vfma(vbcast(rdc, ro + 2), u, q2)
            q3 = vfma(vbcast(rdc, ro + 3), u, q3)
            q4 = vfma(vbcast(rdc, ro + 4), u, q4)
            q5 = vfma(vbcast(rdc, ro + 5), u, q5)
            q6 = vfma(vbcast(rdc, ro + 6), u, q6)
            q7 = vfma(vbcast(rdc, ro + 7), u, q7)
        vstore(S, soff + W * v, vadd(vload(S, soff + W * v), sa))
        _flush8(Q, qoff + W * v, Dp, q0, q1, q2, q3, q4, q5, q6, q7)
    # tiles of TILE rows; on the diagonal a tile also fills some entries below it (unused)
    for a0 in range(TILE, D, TILE):
        for v in range(a0 // W, nv):
            q0 = vzero()
            q1 = vzero()
            q2 = vzero()
            q3 = vzero()
            q4 = vzero()
            q5 = vzero()
            q6 = vzero()
            q7 = vzero()
            for j in range(c):
                ro = j * Dp + a0
                u = vload(dc, j * Dp + W * v)
                q0 = vfma(vbcast(rdc, ro), u, q0)
                q1 = vfma(vbcast(rdc, ro + 1), u, q1)
                q2 = vfma(vbcast(rdc, ro + 2), u, q2)
                q3 = vfma(vbcast(rdc, ro + 3), u, q3)
                q4 = vfma(vbcast(rdc, ro + 4), u, q4)
                q5 = vfma(vbcast(rdc, ro + 5), u, q5)
                q6 = vfma(vbcast(rdc, ro + 6), u, q6)
                q7 = vfma(vbcast(rdc, ro + 7), u, q7)
            _flush8(Q, qoff + a0 * Dp + W * v, Dp, q0, q1, q2, q3, q4, q5, q6, q7)


@njit(**_OPTS)
def _scatter_tiles_4x2(dc, rdc, c, D, Dp, Q, qoff, S, soff):
    """The scatter and sums of ``c`` packed rows with four-lane vectors (AVX2).

    Tiles of four rows by two vectors (eight columns): eight accumulators,
    and per packed row two vector loads and four broadcasts for eight
    multiply-adds.  (The 8 x 1 tiles of eight-lane vectors would need nine
    loads for eight, which bounds a 4-lane machine by its load ports.)
    """
    for v in range(Dp // W):
        sa = vzero()
        for j in range(c):
            sa = vadd(sa, vload(rdc, j * Dp + W * v))
        vstore(S, soff + W * v, vadd(vload(S, soff + W * v), sa))
    for a0 in range(0, D, 4):
        # column blocks from the one holding the diagonal (its entries below it are unused)
        for cb in range((a0 // (2 * W)) * (2 * W), Dp, 2 * W):
            q00 = vzero()
            q01 = vzero()
            q10 = vzero()
            q11 = vzero()
            q20 = vzero()
            q21 = vzero()
            q30 = vzero()
            q31 = vzero()
            for j in range(c):
                ro = j * Dp
                u0 = vload(dc, ro + cb)
                u1 = vload(dc, ro + cb + W)
                b = vbcast(rdc, ro + a0)
                q00 = vfma(b, u0, q00)
                q01 = vfma(b, u1, q01)
                b = vbcast(rdc, ro + a0 + 1)
                q10 = vfma(b, u0, q10)
                q11 = vfma(b, u1, q11)
                b = vbcast(rdc, ro + a0 + 2)
                q20 = vfma(b, u0, q20)
                q21 = vfma(b, u1, q21)
                b = vbcast(rdc, ro + a0 + 3)
                q30 = vfma(b, u0, q30)
                q31 = vfma(b, u1, q31)
            o = qoff + a0 * Dp + cb
            vstore(Q, o, vadd(vload(Q, o), q00))
            vstore(Q, o + W, vadd(vload(Q, o + W), q01))
            o += Dp
            vstore(Q, o, vadd(vload(Q, o), q10))
            vstore(Q, o + W, vadd(vload(Q, o + W), q11))
            o += Dp
            vstore(Q, o, vadd(vload(Q, o), q20))
            vstore(Q, o + W, vadd(vload(Q, o + W), q21))
            o += Dp
            vstore(Q, o, vadd(vload(Q, o), q30))
            vstore(Q, o + W, vadd(vload(Q, o + W), q31))


@njit(**_OPTS)
def _flush8(Q, o, stride, q0, q1, q2, q3, q4, q5, q6, q7):
    vstore(Q, o, vadd(vload(Q, o), q0))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q1))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q2))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q3))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q4))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q5))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q6))
    o += stride
    vstore(Q, o, vadd(vload(Q, o), q7))


@njit(**_OPTS)
def _finish_full(D, NKv, S, Q, nk, sums, scatter):
    """Add the block accumulators to the caller's statistics.

    ``Q`` is (Kq, Dp, Dp) and ``scatter`` (Kq, D, D): Kq = K for full, 1
    for tied; only upper triangles are copied.
    """
    for k in range(NKv.shape[0]):
        nk[k] += vhsum(vload(NKv, k * W))
        for a in range(D):
            sums[k, a] += S[k, a]
    for k in range(Q.shape[0]):
        for a in range(D):
            for b in range(a, D):
                scatter[k, a, b] += Q[k, a, b]


# ---------------------------------------------------------------------------
# E-step kernels: statistics around the current means, and the log-likelihood.


@njit(**_OPTS)
def estep_full(X, wt, means_p, U_p, logc, rmin, nk, sums, scatter, rows):
    """Full covariances; ``U_p`` (K, Dp, Dp) padded upper precision factors."""
    n, D = X.shape
    K, Dp = means_p.shape
    BR = block_rows(Dp)
    xb = np.zeros((BR, Dp))
    xT = np.zeros((Dp, BR))
    dT = np.zeros((Dp, BR))
    LPT = np.empty((K, BR))
    RT = np.empty((K, BR))
    dc = np.empty((BR, Dp))
    rdc = np.empty((BR, Dp))
    Q = np.zeros((K, Dp, Dp))
    S = np.zeros((K, Dp))
    NKv = np.zeros((K, W))
    WB = np.empty(BR)
    LLB = np.empty(BR)
    llv = vzero()
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_rows(X, i0, m, D, xb)
        _load_cols(X, i0, m, D, xT)
        _load_weights(wt, i0, m, WB)
        for k in range(K):
            _center_cols(xT, means_p, k * Dp, D, dT)
            _maha_cols(dT, U_p, k * Dp * Dp, D, Dp, LPT, k * BR, logc[k])
        llv = vadd(llv, _responsibilities(LPT, K, RT, NKv, WB, LLB))
        _emit_scores(LPT, LLB, i0, m, rows)
        for k in range(K):
            _scatter_rows(xb, m, means_p, k, RT[k], WB, rmin[k], D, dc, rdc, Q, k * Dp * Dp, S, k * Dp)
    _finish_full(D, NKv, S, Q, nk, sums, scatter)
    return vhsum(llv)


@njit(**_OPTS)
def _tied_logprob(xT, D, Dp, center_p, U_p, muw_p, logc, dT, yT, LPT):
    """Weighted log-probabilities of a block under a shared precision factor.

    Whitening is shared: ``y_k = (x - c) U - (mu_k - c) U`` with ``c``
    central, so the subtraction cancels little for data far from 0.
    """
    K = LPT.shape[0]
    BR = xT.shape[1]
    _center_cols(xT, center_p, 0, D, dT)
    _whiten_cols(dT, U_p, D, Dp, yT)
    half = vsplat(-0.5)
    for k in range(K):
        c = vsplat(logc[k])
        for o in range(0, BR, W):
            acc = vzero()
            for b in range(D):
                t = vsub(vload(yT, b * BR + o), vbcast(muw_p, k * Dp + b))
                acc = vfma(t, t, acc)
            vstore(LPT, k * BR + o, vfma(half, acc, c))


@njit(**_OPTS)
def estep_tied(X, wt, means_p, U_p, logc, center_p, muw_p, rmin, nk, sums, scatter, rows):
    """Tied covariance; ``U_p`` (Dp, Dp), ``center_p`` (Dp,), ``muw_p`` (K, Dp)."""
    n, D = X.shape
    K, Dp = means_p.shape
    BR = block_rows(Dp)
    xb = np.zeros((BR, Dp))
    xT = np.zeros((Dp, BR))
    dT = np.zeros((Dp, BR))
    yT = np.zeros((Dp, BR))
    LPT = np.empty((K, BR))
    RT = np.empty((K, BR))
    dc = np.empty((BR, Dp))
    rdc = np.empty((BR, Dp))
    Q = np.zeros((1, Dp, Dp))
    S = np.zeros((K, Dp))
    NKv = np.zeros((K, W))
    WB = np.empty(BR)
    LLB = np.empty(BR)
    llv = vzero()
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_rows(X, i0, m, D, xb)
        _load_cols(X, i0, m, D, xT)
        _load_weights(wt, i0, m, WB)
        _tied_logprob(xT, D, Dp, center_p, U_p, muw_p, logc, dT, yT, LPT)
        llv = vadd(llv, _responsibilities(LPT, K, RT, NKv, WB, LLB))
        _emit_scores(LPT, LLB, i0, m, rows)
        for k in range(K):
            _scatter_rows(xb, m, means_p, k, RT[k], WB, rmin[k], D, dc, rdc, Q, 0, S, k * Dp)
    _finish_full(D, NKv, S, Q, nk, sums, scatter.reshape((1, D, D)))
    return vhsum(llv)


@njit(**_OPTS)
def _diag_logprob(xT, D, Dp, means_p, P_p, logc, spherical, SQT, LPT):
    """Weighted log-probabilities of a block, diagonal or spherical precisions.

    diag: ``logc_k - sum_a P[k, a] (x_a - mu_ka)^2 / 2``; spherical:
    ``logc_k - P[k, 0] sum_a (x_a - mu_ka)^2 / 2``, and ``SQT[k]``
    receives ``sum_a (x_a - mu_ka)^2``.
    """
    K = LPT.shape[0]
    BR = xT.shape[1]
    half = vsplat(-0.5)
    for k in range(K):
        c = vsplat(logc[k])
        for o in range(0, BR, 2 * W):
            a0 = vzero()
            a1 = vzero()
            for a in range(D):
                mu = vbcast(means_p, k * Dp + a)
                t0 = vsub(vload(xT, a * BR + o), mu)
                t1 = vsub(vload(xT, a * BR + o + W), mu)
                if spherical:
                    a0 = vfma(t0, t0, a0)
                    a1 = vfma(t1, t1, a1)
                else:
                    p = vbcast(P_p, k * Dp + a)
                    a0 = vfma(vmul(t0, t0), p, a0)
                    a1 = vfma(vmul(t1, t1), p, a1)
            if spherical:
                vstore(SQT, k * BR + o, a0)
                vstore(SQT, k * BR + o + W, a1)
                p = vbcast(P_p, k * Dp)
                a0 = vmul(a0, p)
                a1 = vmul(a1, p)
            vstore(LPT, k * BR + o, vfma(half, a0, c))
            vstore(LPT, k * BR + o + W, vfma(half, a1, c))


@njit(**_OPTS)
def _diag_stats(xT, D, Dp, means_p, RT, spherical, SQT, Sv, Qv):
    """Per-lane sums ``Sv`` (K, Dp, W) and diagonal scatter ``Qv`` (K, Dp, W) of a block.

    spherical: ``Qv[k, 0]`` receives ``sum_i r_ik |x_i - mu_k|^2``.
    """
    K = RT.shape[0]
    BR = xT.shape[1]
    for k in range(K):
        for a in range(D):
            mu = vbcast(means_p, k * Dp + a)
            s0 = vzero()
            q0 = vzero()
            for o in range(0, BR, W):
                t = vsub(vload(xT, a * BR + o), mu)
                rt = vmul(vload(RT, k * BR + o), t)
                s0 = vadd(s0, rt)
                if not spherical:
                    q0 = vfma(rt, t, q0)
            p = (k * Dp + a) * W
            vstore(Sv, p, vadd(vload(Sv, p), s0))
            if not spherical:
                vstore(Qv, p, vadd(vload(Qv, p), q0))
        if spherical:
            q0 = vzero()
            minpos = vsplat(5e-324)
            zero = vzero()
            for o in range(0, BR, W):
                r = vload(RT, k * BR + o)
                # a row without responsibility adds nothing, even when its squared
                # distance overflowed to inf (a far row of weight 0: 0 * inf is NaN)
                q0 = vfma(r, vselect_ge(r, minpos, vload(SQT, k * BR + o), zero), q0)
            p = k * Dp * W
            vstore(Qv, p, vadd(vload(Qv, p), q0))


@njit(**_OPTS)
def _estep_diag_impl(X, wt, means_p, P_p, logc, nk, sums, scatter, rows, spherical):
    n, D = X.shape
    K, Dp = means_p.shape
    BR = block_rows(Dp)
    xT = np.zeros((Dp, BR))
    LPT = np.empty((K, BR))
    RT = np.empty((K, BR))
    SQT = np.zeros((K, BR))
    Sv = np.zeros((K, Dp, W))
    Qv = np.zeros((K, Dp, W))
    NKv = np.zeros((K, W))
    WB = np.empty(BR)
    LLB = np.empty(BR)
    llv = vzero()
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_cols(X, i0, m, D, xT)
        _load_weights(wt, i0, m, WB)
        _diag_logprob(xT, D, Dp, means_p, P_p, logc, spherical, SQT, LPT)
        llv = vadd(llv, _responsibilities(LPT, K, RT, NKv, WB, LLB))
        _emit_scores(LPT, LLB, i0, m, rows)
        _diag_stats(xT, D, Dp, means_p, RT, spherical, SQT, Sv, Qv)
    for k in range(K):
        nk[k] += vhsum(vload(NKv, k * W))
        for a in range(D):
            sums[k, a] += vhsum(vload(Sv, (k * Dp + a) * W))
            if not spherical:
                scatter[k, a] += vhsum(vload(Qv, (k * Dp + a) * W))
        if spherical:
            scatter[k, 0] += vhsum(vload(Qv, k * Dp * W))
    return vhsum(llv)


@njit(**_OPTS)
def estep_diag(X, wt, means_p, P_p, logc, nk, sums, scatter, rows):
    """Diagonal covariances; ``P_p`` (K, Dp) precisions, ``scatter`` (K, D)."""
    return _estep_diag_impl(X, wt, means_p, P_p, logc, nk, sums, scatter, rows, False)


@njit(**_OPTS)
def estep_spherical(X, wt, means_p, P_p, logc, nk, sums, scatter, rows):
    """Spherical covariances; ``P_p[k, 0]`` the precision, ``scatter`` (K,)."""
    return _estep_diag_impl(X, wt, means_p, P_p, logc, nk, sums, scatter.reshape((-1, 1)), rows, True)


# ---------------------------------------------------------------------------
# Scoring and prediction.  ``mode`` selects what is written for row i:
#   WLP    out[i, :K] = weighted log-probabilities (out is (n, K));
#   SCORE  out[i, 0]  = log p(x_i), their log-sum-exp;
#   LABEL  out[i, 0]  = argmax_k of them (lowest k on ties), as a float.

WLP = 0
SCORE = 1
LABEL = 2


@njit(**_OPTS)
def _emit_rows(LPT, i0, m, mode, out, tmp):
    K, BR = LPT.shape
    if mode == WLP:
        for i in range(m):
            for k in range(K):
                out[i0 + i, k] = LPT[k, i]
    elif mode == SCORE:
        one = vsplat(1.0)
        for o in range(0, BR, W):
            mx = vload(LPT, o)
            for k in range(1, K):
                mx = vmax(mx, vload(LPT, k * BR + o))
            s = vzero()
            for k in range(K):
                s = vadd(s, vexp_neg(vsub(vload(LPT, k * BR + o), mx)))
            lse = vadd(mx, vlog_ge1(vselect_ge(s, one, s, one)))
            vstore(tmp, o, vselect_ge(s, one, lse, vsplat(-np.inf)))
        for i in range(m):
            out[i0 + i, 0] = tmp[i]
    else:
        for i in range(m):
            best = LPT[0, i]
            arg = 0
            for k in range(1, K):
                if LPT[k, i] > best:
                    best = LPT[k, i]
                    arg = k
            out[i0 + i, 0] = arg


@njit(**_OPTS)
def wlogprob_full(X, means_p, U_p, logc, mode, out):
    n, D = X.shape
    K, Dp = means_p.shape
    BR = block_rows(Dp)
    xT = np.zeros((Dp, BR))
    dT = np.zeros((Dp, BR))
    LPT = np.empty((K, BR))
    tmp = np.empty(BR)
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_cols(X, i0, m, D, xT)
        for k in range(K):
            _center_cols(xT, means_p, k * Dp, D, dT)
            _maha_cols(dT, U_p, k * Dp * Dp, D, Dp, LPT, k * BR, logc[k])
        _emit_rows(LPT, i0, m, mode, out, tmp)


@njit(**_OPTS)
def wlogprob_tied(X, means_p, U_p, logc, center_p, muw_p, mode, out):
    n, D = X.shape
    K, Dp = means_p.shape
    BR = block_rows(Dp)
    xT = np.zeros((Dp, BR))
    dT = np.zeros((Dp, BR))
    yT = np.zeros((Dp, BR))
    LPT = np.empty((K, BR))
    tmp = np.empty(BR)
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_cols(X, i0, m, D, xT)
        _tied_logprob(xT, D, Dp, center_p, U_p, muw_p, logc, dT, yT, LPT)
        _emit_rows(LPT, i0, m, mode, out, tmp)


@njit(**_OPTS)
def _wlogprob_diag_impl(X, means_p, P_p, logc, mode, out, spherical):
    n, D = X.shape
    K, Dp = means_p.shape
    BR = block_rows(Dp)
    xT = np.zeros((Dp, BR))
    LPT = np.empty((K, BR))
    SQT = np.empty((K, BR))
    tmp = np.empty(BR)
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_cols(X, i0, m, D, xT)
        _diag_logprob(xT, D, Dp, means_p, P_p, logc, spherical, SQT, LPT)
        _emit_rows(LPT, i0, m, mode, out, tmp)


@njit(**_OPTS)
def wlogprob_diag(X, means_p, P_p, logc, mode, out):
    _wlogprob_diag_impl(X, means_p, P_p, logc, mode, out, False)


@njit(**_OPTS)
def wlogprob_spherical(X, means_p, P_p, logc, mode, out):
    _wlogprob_diag_impl(X, means_p, P_p, logc, mode, out, True)


# ---------------------------------------------------------------------------
# Statistics from given responsibilities (initialisation) around ``shift``.


@njit(**_OPTS)
def _resp_block(resp, i0, m, RT, NKv):
    K, BR = RT.shape
    for k in range(K):
        for i in range(m):
            RT[k, i] = resp[i0 + i, k]
        for i in range(m, BR):
            RT[k, i] = 0.0
        for o in range(0, BR, W):
            vstore(NKv, k * W, vadd(vload(NKv, k * W), vload(RT, k * BR + o)))


@njit(**_OPTS)
def accumulate_full(X, resp, shift_p, nk, sums, scatter):
    """Per-component full scatter; ``shift_p`` (K, Dp); ``scatter`` (K, D, D), upper triangle."""
    n, D = X.shape
    K, Dp = shift_p.shape
    BR = block_rows(Dp)
    xb = np.zeros((BR, Dp))
    RT = np.zeros((K, BR))
    dc = np.empty((BR, Dp))
    rdc = np.empty((BR, Dp))
    Q = np.zeros((K, Dp, Dp))
    S = np.zeros((K, Dp))
    NKv = np.zeros((K, W))
    ones = np.ones(BR)  # row weights, if any, are already in resp
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_rows(X, i0, m, D, xb)
        _resp_block(resp, i0, m, RT, NKv)
        for k in range(K):
            # every positive responsibility counts, as in scikit-learn's initialisation
            _scatter_rows(xb, m, shift_p, k, RT[k], ones, 5e-324, D, dc, rdc, Q, k * Dp * Dp, S, k * Dp)
    _finish_full(D, NKv, S, Q, nk, sums, scatter)


@njit(**_OPTS)
def accumulate_diag(X, resp, shift_p, nk, sums, scatter):
    """Per-component diagonal scatter; ``shift_p`` (K, Dp); ``scatter`` (K, D)."""
    n, D = X.shape
    K, Dp = shift_p.shape
    BR = block_rows(Dp)
    xT = np.zeros((Dp, BR))
    RT = np.zeros((K, BR))
    SQT = np.zeros((K, BR))
    Sv = np.zeros((K, Dp, W))
    Qv = np.zeros((K, Dp, W))
    NKv = np.zeros((K, W))
    for i0 in range(0, n, BR):
        m = min(BR, n - i0)
        _load_cols(X, i0, m, D, xT)
        _resp_block(resp, i0, m, RT, NKv)
        _diag_stats(xT, D, Dp, shift_p, RT, False, SQT, Sv, Qv)
    for k in range(K):
        nk[k] += vhsum(vload(NKv, k * W))
        for a in range(D):
            sums[k, a] += vhsum(vload(Sv, (k * Dp + a) * W))
            scatter[k, a] += vhsum(vload(Qv, (k * Dp + a) * W))


@njit(nogil=True, cache=True, error_model="numpy")
def inv_lower_transposed(L, out):
    """``out[k] = inv(L[k]).T`` for lower-triangular L (K, D, D), by forward substitution.

    What ``scipy.linalg.solve_triangular(L, I, lower=True).T`` computes,
    without calling BLAS: OpenBLAS wakes its threads for that tiny trsm and
    leaves them spinning for ~0.1 s, on the cores the next E-step needs
    (measured: the next pass 30% slower).
    """
    K, D, _ = L.shape
    for k in range(K):
        for j in range(D):
            # column j of inv(L) is x with L x = e_j; x[i] = 0 for i < j
            for i in range(j):
                out[k, j, i] = 0.0
            for i in range(j, D):
                s = 1.0 if i == j else 0.0
                for t in range(j, i):
                    s -= L[k, i, t] * out[k, j, t]
                out[k, j, i] = s / L[k, i, i]


@njit(**_OPTS)
def mirror_upper(scatter):
    """Copy the upper triangle of each trailing (D, D) matrix onto its lower triangle."""
    S = scatter.reshape((-1, scatter.shape[-2], scatter.shape[-1]))
    D = S.shape[1]
    for k in range(S.shape[0]):
        for a in range(D):
            for b in range(a + 1, D):
                S[k, b, a] = S[k, a, b]


# ---------------------------------------------------------------------------
# k-means helpers: exact squared distances (no |x|^2 - 2 x.c + |c|^2
# cancellation, which loses everything for data far from the origin).

_KOPTS = dict(nogil=True, cache=True, error_model="numpy")


@njit(**_KOPTS)
def nearest(X, centers, labels, dist):
    """Index of and squared distance to the nearest center, per row."""
    n = X.shape[0]
    C, D = centers.shape
    for i in range(n):
        best = np.inf
        arg = 0
        for c in range(C):
            s = 0.0
            for j in range(D):
                t = X[i, j] - centers[c, j]
                s += t * t
                if s >= best:
                    break
            if s < best:
                best = s
                arg = c
        labels[i] = arg
        dist[i] = best


@njit(**_KOPTS)
def min_sqdist_update(X, centers, dist):
    """``dist[i] = min(dist[i], min_c |x_i - c|^2)`` in place."""
    n = X.shape[0]
    C, D = centers.shape
    for i in range(n):
        best = dist[i]
        for c in range(C):
            s = 0.0
            for j in range(D):
                t = X[i, j] - centers[c, j]
                s += t * t
                if s >= best:
                    break
            if s < best:
                best = s
        dist[i] = best


@njit(**_KOPTS)
def sqdist_each(X, centers, out):
    """``out[i, c] = |x_i - c|^2`` for every row and center."""
    n = X.shape[0]
    C, D = centers.shape
    for i in range(n):
        for c in range(C):
            s = 0.0
            for j in range(D):
                t = X[i, j] - centers[c, j]
                s += t * t
            out[i, c] = s
