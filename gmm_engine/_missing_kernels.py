"""Numba kernels for rows with missing features (NaN), grouped by missing pattern.

Ghahramani & Jordan (1994); shared/EM-NOTES.md, "Missing values".  For a
row with observed features o and missing features m, component k:

* the log-probability is that of the marginal ``N(x_o | mu_ko, S_oo)``
  with ``S = Sigma_k``: with ``L L^T = S_oo`` (Cholesky) and
  ``y = L^-1 (x_o - mu_ko)``,
  ``log w_k - (|o| log(2 pi) + log|S_oo| + |y|^2) / 2``;
* the completed row is ``x_o`` on o and
  ``mu_km + S_mo S_oo^-1 (x_o - mu_ko) = mu_km + C y`` on m, with
  ``C = S_mo L^-T``;
* the scatter of the M-step also receives ``r (S_mm - C C^T)``, the
  conditional covariance of the missing block (a Schur complement).

``L``, ``C`` and ``S_mm - C C^T`` depend on the pattern and the component
only, so they are computed once per pattern and component of a chunk
(:func:`_prepare`).  Diagonal covariances (diag, spherical) have ``C = 0``:
the completed row is the component mean and the conditional covariance
the variances of the missing features, whatever the pattern, so their rows
are not grouped (:func:`diagonal_marginal_estep`).

Layout: the rows of a pattern are processed in blocks of up to
:data:`BLOCK` rows held transposed (features by rows), with the fused
kernels' conventions (:mod:`gmm_engine._kernels`): the whitening runs two
register vectors of rows at a time (:func:`_whiten`), and the
responsibilities, per-row scores and the scatter of the completed rows
are the fused kernels' own functions (vector exp and log, register tiles,
the same skipping of negligible responsibilities).  The other loops run
over the rows of a block, contiguous, and vectorise (their sums too: the
kernels allow reassociation).

Conventions:

* ``X`` (n, D), float32 or float64, holds the incomplete rows sorted by
  pattern; pattern p is rows ``bounds[p] .. bounds[p + 1]`` and
  ``masks[p]`` (D,) uint8 is 1 where its features are missing.
* ``covs`` (K, D, D) float64 are the component covariances as full
  matrices (full and tied; the diagonal types pass their variances
  ``var`` (K, D)), ``means`` (K, D) and ``logw`` (K,) the means and
  log-weights.
* Differences ``x - mu_k`` are taken before any product and statistics
  are accumulated around the component means, as the fused kernels do.
  Arithmetic is float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._kernels import TILE, _emit_scores, _scatter_rows
from ._kernels import _responsibilities as _fused_responsibilities
from ._simd import CACHE, W, vadd, vbcast, vfma, vhsum, vload, vmul, vsplat, vstore, vsub, vzero

# reassociation lets the loops over a block's rows vectorise their sums; the kernels
# built on gmm_engine._kernels follow its cache rule (the vector width is compiled in)
_OPTS = dict(nogil=True, cache=CACHE, error_model="numpy", fastmath={"contract", "reassoc"})

LOG_2PI = math.log(2.0 * math.pi)
#: rows of a pattern processed together: a multiple of two vectors of either width
BLOCK = 64


@njit(nogil=True, cache=CACHE, error_model="numpy")
def count_observed(X, out):
    """``out[i]`` = the features of row i that are not NaN."""
    n, D = X.shape
    for i in range(n):
        nan = 0
        for a in range(D):
            nan += X[i, a] != X[i, a]
        out[i] = D - nan


@njit(**_OPTS)
def _finite_row(X, i):
    """Whether row i of X is finite: one vectorised sum (``x * 0`` is NaN for NaN and +-inf)."""
    s = 0.0
    for a in range(X.shape[1]):
        s += X[i, a] * 0.0
    return s == 0.0


@njit(**_OPTS)
def _copy_run(X, i0, i1, Xc, at_c, nc):
    """Rows ``i0 .. i1`` of X to ``Xc[nc:]`` with their positions; returns the new ``nc``."""
    D = X.shape[1]
    for r in range(i1 - i0):
        for a in range(D):
            Xc[nc + r, a] = X[i0 + r, a]
        at_c[nc + r] = i0 + r
    return nc + i1 - i0


@njit(**_OPTS)
def partition_rows(X, Xc, at_c, Xi, at_i, keys_i):
    """Split X's rows into incomplete ones and the others, in one pass; returns ``(nc, ni)``.

    Incomplete rows (some but not all features NaN, no infinity) are
    copied into ``Xi[:ni]`` with their positions ``at_i`` and, when
    ``keys_i`` is not empty (D <= 64), their NaN bit masks.  The other
    rows go to ``Xc[:nc]`` and ``at_c``, in runs (copied when the next
    incomplete row ends them), but only once an incomplete row was
    seen: a chunk without one is not copied at all (``ni == 0``).
    ``Xc`` and ``Xi`` have X's shape, so only what is written is touched.
    Refused rows (an infinity, every feature NaN) count as others.
    """
    n, D = X.shape
    want_keys = keys_i.shape[0] > 0
    nc = 0
    ni = 0
    run = 0  # first row of the current run of other rows
    for i in range(n):
        if _finite_row(X, i):
            continue
        nan = 0
        inf = False
        key = np.uint64(0)
        for a in range(D):
            v = X[i, a]
            if v != v:
                nan += 1
                if a < 64:
                    key |= np.uint64(1) << np.uint64(a)
            elif v - v != 0.0:
                inf = True
        if inf or nan == D:
            continue
        nc = _copy_run(X, run, i, Xc, at_c, nc)
        run = i + 1
        for a in range(D):
            Xi[ni, a] = X[i, a]
        at_i[ni] = i
        if want_keys:
            keys_i[ni] = key
        ni += 1
    if ni:
        nc = _copy_run(X, run, n, Xc, at_c, nc)
    return nc, ni


@njit(**_OPTS)
def _transposed(covs):
    """``covs`` (K, D, D) as (D, D, K): components innermost, the lanes of :func:`_prepare`."""
    K, D, _ = covs.shape
    out = np.empty((D, D, K))
    for k in range(K):
        for a in range(D):
            for b in range(D):
                out[a, b, k] = covs[k, a, b]
    return out


@njit(**_OPTS)
def _prepare(mask, covsT, logw, obs, mis, L, invd, C, S, logc, s):
    """Every component's Cholesky ``L`` of ``S_oo``, ``C = S_mo L^-T``, ``S_mm - C C^T`` and log constant.

    All components at once, lanes = components (``covsT`` (D, D, K) from
    :func:`_transposed`; outputs likewise with k last): ``L[:no, :no]``,
    ``invd[:no] = 1 / diag(L)``, ``C[:nm, :no]``, ``S[:nm, :nm]``, and
    ``logc`` (K,).  Writes ``obs``/``mis`` (the observed and missing
    feature indices); ``s`` (K,) is scratch.  Returns ``(no, nm, bad)``
    with ``bad`` the first component whose ``S_oo`` is not positive
    definite (-1 if none).
    """
    D, _, K = covsT.shape
    no = 0
    nm = 0
    for a in range(D):
        if mask[a]:
            mis[nm] = a
            nm += 1
        else:
            obs[no] = a
            no += 1
    # row by row, multiplying by the reciprocals of the diagonal (divisions are slow)
    for j in range(no):
        for q in range(j + 1):
            for k in range(K):
                s[k] = covsT[obs[j], obs[q], k]
            for t in range(q):
                for k in range(K):
                    s[k] -= L[j, t, k] * L[q, t, k]
            if q == j:
                for k in range(K):
                    if not s[k] > 0.0:
                        return no, nm, k
                for k in range(K):
                    L[j, j, k] = math.sqrt(s[k])
            else:
                for k in range(K):
                    L[j, q, k] = s[k] * invd[q, k]
        for k in range(K):
            invd[j, k] = 1.0 / L[j, j, k]
    # C^T = L^-1 S_om, one missing feature (a column) at a time
    for a in range(nm):
        for j in range(no):
            for k in range(K):
                s[k] = covsT[obs[j], mis[a], k]
            for t in range(j):
                for k in range(K):
                    s[k] -= L[j, t, k] * C[a, t, k]
            for k in range(K):
                C[a, j, k] = s[k] * invd[j, k]
    for a in range(nm):
        for b in range(nm):
            for k in range(K):
                s[k] = covsT[mis[a], mis[b], k]
            for j in range(no):
                for k in range(K):
                    s[k] -= C[a, j, k] * C[b, j, k]
            for k in range(K):
                S[a, b, k] = s[k]
    for k in range(K):
        logdet = 0.0
        for j in range(no):
            v = L[j, j, k]
            logdet += math.log(v)
        logc[k] = logw[k] - 0.5 * no * LOG_2PI - logdet
    return no, nm, -1


@njit(**_OPTS)
def _load_observed(X, r0, m, obs, no, XO):
    """``XO[j, i] = X[r0 + i, obs[j]]``: the block's observed values, transposed."""
    for j in range(no):
        a = obs[j]
        for i in range(m):
            XO[j, i] = X[r0 + i, a]


@njit(**_OPTS)
def _whiten(XO, m, k, means, L, invd, obs, no, Y, LPT, logc_k):
    """``Y[:no] = L_k^-1 (x_o - mu_ko)`` for the block's rows, and ``LPT[k]`` their log-probabilities.

    Lanes = rows, two vectors (2 W rows) at a time, up to the pair holding
    row ``m - 1`` (rows beyond ``m`` are padding); the forward
    substitution keeps its two accumulators in registers, interleaved to
    hide the latency of the multiply-adds.  ``XO``, ``Y`` (D, BLOCK) and
    ``LPT`` (K, BLOCK) are C-contiguous; BLOCK is a multiple of 2 W.
    """
    B = XO.shape[1]
    Dm = means.shape[1]
    half = vsplat(-0.5)
    c = vsplat(logc_k)
    for o in range(0, m, 2 * W):
        s0 = vzero()
        s1 = vzero()
        for j in range(no):
            mu = vbcast(means, k * Dm + obs[j])
            t0 = vsub(vload(XO, j * B + o), mu)
            t1 = vsub(vload(XO, j * B + o + W), mu)
            for q in range(j):
                lq = vsplat(-L[j, q, k])
                t0 = vfma(lq, vload(Y, q * B + o), t0)
                t1 = vfma(lq, vload(Y, q * B + o + W), t1)
            inv = vsplat(invd[j, k])
            t0 = vmul(t0, inv)
            t1 = vmul(t1, inv)
            vstore(Y, j * B + o, t0)
            vstore(Y, j * B + o + W, t1)
            s0 = vfma(t0, t0, s0)
            s1 = vfma(t1, t1, s1)
        vstore(LPT, k * B + o, vfma(half, s0, c))
        vstore(LPT, k * B + o + W, vfma(half, s1, c))


@njit(**_OPTS)
def _block_weights(wt, r0, m, WB):
    """Row weights of a block into ``WB`` (BLOCK,): ``wt[r0 : r0 + m]`` or ones, 0 for padding rows."""
    for i in range(WB.shape[0]):
        WB[i] = 0.0 if i >= m else (1.0 if wt.shape[0] == 0 else wt[r0 + i])


@njit(**_OPTS)
def _complete_rows(XO, m, k, r, WB, rmin, means, C, obs, no, mis, nm, Y, xb):
    """Rows of ``xb`` (BLOCK, Dp): the block's rows completed under component k (observed values as they are).

    Only the rows ``_scatter_rows`` keeps for k (``r > 0`` and
    ``r >= rmin * WB``) are written.
    """
    for i in range(m):
        if not (r[i] > 0.0 and r[i] >= rmin * WB[i]):
            continue
        for j in range(no):
            xb[i, obs[j]] = XO[j, i]
        for b in range(nm):
            t = means[k, mis[b]]
            for j in range(no):
                t += C[b, j, k] * Y[j, i]
            xb[i, mis[b]] = t


@njit(**_OPTS)
def _add_conditional(k, Rk, mis, nm, S, scatter):
    """``scatter_k[m, m] += R_k (S_mm - C C^T)`` (upper triangle)."""
    for a in range(nm):
        for b in range(nm):
            if mis[b] >= mis[a]:
                scatter[k, mis[a], mis[b]] += Rk * S[a, b, k]


@njit(**_OPTS)
def marginal_logprob(X, bounds, masks, means, covs, logw, out):
    """``out[i, k] = log w_k + log N(x_io | mu_ko, Sigma_k,oo)`` for every incomplete row and component.

    Returns -1, or the first component whose observed block is not
    positive definite.
    """
    K, D = means.shape
    obs = np.empty(D, dtype=np.int64)
    mis = np.empty(D, dtype=np.int64)
    covsT = _transposed(covs)
    L = np.zeros((D, D, K))
    invd = np.zeros((D, K))
    C = np.zeros((D, D, K))
    S = np.zeros((D, D, K))
    logc = np.empty(K)
    scratch = np.empty(K)
    XO = np.zeros((D, BLOCK))  # padding rows stay finite
    Y = np.empty((D, BLOCK))
    LPT = np.empty((K, BLOCK))
    for p in range(bounds.shape[0] - 1):
        no, nm, bad = _prepare(masks[p], covsT, logw, obs, mis, L, invd, C, S, logc, scratch)
        if bad >= 0:
            return bad
        for r0 in range(bounds[p], bounds[p + 1], BLOCK):
            m = min(BLOCK, bounds[p + 1] - r0)
            _load_observed(X, r0, m, obs, no, XO)
            for k in range(K):
                _whiten(XO, m, k, means, L, invd, obs, no, Y, LPT, logc[k])
                for i in range(m):
                    out[r0 + i, k] = LPT[k, i]
    return -1


@njit(**_OPTS)
def marginal_estep(X, wt, bounds, masks, means, covs, logw, rmin, nk, sums, scatter, rows):
    """E-step statistics of incomplete rows around the component means; returns (loglik, bad).

    ``nk`` (K,), ``sums`` (K, D) and ``scatter`` are added to in place:
    ``scatter`` (K, D, D), upper triangles of the per-component scatters
    of the completed rows plus the conditional covariances (full and tied;
    the diagonal types take :func:`diagonal_marginal_estep`).  ``wt`` (n,) row weights or empty;
    ``rows`` (n, 3) receives log p(x_o), the most likely component and its
    responsibility (an empty ``rows`` asks for nothing).  ``bad`` is -1,
    or the first component whose observed block is not positive definite.

    The responsibilities and the scatter of the completed rows are the
    fused kernels' own (:func:`gmm_engine._kernels._responsibilities`,
    ``_scatter_rows``): the same vector exp and log, the same register
    tiles, and the same skipping of rows whose
    responsibility for k is below ``rmin[k]`` (``KernelParams.rmin``) in
    k's sums and scatter (not in its soft count, nor in the conditional
    covariance, which is added once per pattern).
    """
    K, D = means.shape
    Dp = ((D + TILE - 1) // TILE) * TILE  # _kernels.padded_features
    obs = np.empty(D, dtype=np.int64)
    mis = np.empty(D, dtype=np.int64)
    covsT = _transposed(covs)
    L = np.zeros((D, D, K))
    invd = np.zeros((D, K))
    C = np.zeros((D, D, K))
    S = np.zeros((D, D, K))
    logc = np.empty(K)
    scratch = np.empty(K)
    XO = np.zeros((D, BLOCK))  # padding rows stay finite
    Y = np.empty((K, D, BLOCK))
    LPT = np.zeros((K, BLOCK))
    RT = np.empty((K, BLOCK))
    NKv = np.zeros((K, W))  # per-lane soft counts of the fused helper; the counts are summed here
    WB = np.empty(BLOCK)
    LLB = np.empty(BLOCK)
    Rk = np.empty(K)
    xb = np.zeros((BLOCK, Dp))
    means_p = np.zeros((K, Dp))
    for k in range(K):
        for a in range(D):
            means_p[k, a] = means[k, a]
    dc = np.empty((BLOCK, Dp))
    rdc = np.empty((BLOCK, Dp))
    Q = np.zeros((K, Dp, Dp))
    Sp = np.zeros((K, Dp))
    llv = vzero()
    for p in range(bounds.shape[0] - 1):
        no, nm, bad = _prepare(masks[p], covsT, logw, obs, mis, L, invd, C, S, logc, scratch)
        if bad >= 0:
            return 0.0, bad
        Rk[:] = 0.0
        for r0 in range(bounds[p], bounds[p + 1], BLOCK):
            m = min(BLOCK, bounds[p + 1] - r0)
            _load_observed(X, r0, m, obs, no, XO)
            _block_weights(wt, r0, m, WB)
            for k in range(K):
                _whiten(XO, m, k, means, L, invd, obs, no, Y[k], LPT, logc[k])
            llv = vadd(llv, _fused_responsibilities(LPT, K, RT, NKv, WB, LLB))
            _emit_scores(LPT, LLB, r0, m, rows)
            for k in range(K):
                t = 0.0
                for i in range(m):
                    t += RT[k, i]
                Rk[k] += t
                _complete_rows(XO, m, k, RT[k], WB, rmin[k], means, C, obs, no, mis, nm, Y[k], xb)
                _scatter_rows(xb, m, means_p, k, RT[k], WB, rmin[k], D, dc, rdc, Q, k * Dp * Dp, Sp, k * Dp)
        for k in range(K):
            nk[k] += Rk[k]
            if Rk[k] > 0.0:
                _add_conditional(k, Rk[k], mis, nm, S, scatter)
    for k in range(K):
        for a in range(D):
            sums[k, a] += Sp[k, a]
            for b in range(a, D):
                scatter[k, a, b] += Q[k, a, b]
    return vhsum(llv), -1


# ---------------------------------------------------------------------------
# Diagonal types: no patterns


# With diagonal covariances a row's marginal over its observed features is the
# product of their one-dimensional densities, and the completed row is the
# component mean on its missing features: nothing depends on the pattern, so
# the incomplete rows are taken in their order, in blocks, with a mask of the
# observed entries, instead of being grouped and set up per pattern.


@njit(**_OPTS)
def _load_masked(X, r0, m, XO, MO):
    """Rows ``r0 .. r0 + m`` of X transposed into ``XO`` (D, BLOCK), 0 where NaN, and ``MO`` 1 where observed.

    Padding rows (from ``m``) are 0 in both, so their scores stay finite.
    """
    D, BR = XO.shape
    for a in range(D):
        for i in range(BR):
            v = X[r0 + i, a] if i < m else 0.0
            seen = v == v
            XO[a, i] = v if seen else 0.0
            MO[a, i] = 1.0 if seen else 0.0


@njit(**_OPTS)
def _diagonal_logprob(XO, MO, means, prec, logc, logw, LPT):
    """``LPT[k, i] = log w_k - (sum over observed a of log(2 pi var_ka) + (x_ia - mu_ka)^2 / var_ka) / 2``."""
    K, D = means.shape
    BR = XO.shape[1]
    for k in range(K):
        for i in range(BR):
            LPT[k, i] = 0.0
        for a in range(D):
            mu = means[k, a]
            p = prec[k, a]
            c = logc[k, a]
            for i in range(BR):
                z = XO[a, i] - mu
                LPT[k, i] += MO[a, i] * (c + z * z * p)
        for i in range(BR):
            LPT[k, i] = logw[k] - 0.5 * LPT[k, i]


@njit(**_OPTS)
def _diagonal_masked_stats(XO, MO, m, RT, means, var, nk, sums, scatter):
    """Soft counts, sums and squared deviations of the block's completed rows, around the component means.

    A missing feature's completed value is ``mu_ka`` (no deviation) and its
    conditional variance ``var_ka``, added once per row with its
    responsibility.  ``RT`` (K, BLOCK) holds ``w_i r_ik``.
    """
    K, D = means.shape
    for k in range(K):
        t = 0.0
        for i in range(m):
            t += RT[k, i]
        nk[k] += t
        for a in range(D):
            mu = means[k, a]
            t1 = 0.0
            t2 = 0.0
            tm = 0.0
            for i in range(m):
                r = RT[k, i]
                # a row without responsibility adds nothing, even if its difference overflowed
                z = (XO[a, i] - mu) * MO[a, i] if r > 0.0 else 0.0
                rz = r * z
                t1 += rz
                t2 += rz * z
                tm += r - r * MO[a, i]
            sums[k, a] += t1
            scatter[k, 0, a] += t2 + tm * var[k, a]


@njit(**_OPTS)
def _diagonal_constants(var):
    """``1 / var`` and ``log(2 pi var)`` (K, D) of the component variances."""
    return 1.0 / var, np.log(var) + LOG_2PI


@njit(**_OPTS)
def diagonal_marginal_logprob(X, means, var, logw, out):
    """``out[i, k] = log w_k + log N(x_io | mu_ko, diag(var_ko))`` for incomplete rows X (n, D), in their order.

    ``var`` (K, D) are the component variances, positive.
    """
    K, D = means.shape
    n = X.shape[0]
    prec, logc = _diagonal_constants(var)
    XO = np.zeros((D, BLOCK))
    MO = np.zeros((D, BLOCK))
    LPT = np.empty((K, BLOCK))
    for r0 in range(0, n, BLOCK):
        m = min(BLOCK, n - r0)
        _load_masked(X, r0, m, XO, MO)
        _diagonal_logprob(XO, MO, means, prec, logc, logw, LPT)
        for i in range(m):
            for k in range(K):
                out[r0 + i, k] = LPT[k, i]


@njit(**_OPTS)
def diagonal_marginal_estep(X, wt, means, var, logw, nk, sums, scatter, rows):
    """E-step statistics of incomplete rows X (n, D), in their order, for the diagonal types; returns the loglik.

    The contract of :func:`marginal_estep` for the diagonal types (``scatter``
    (K, 1, D) the diagonals, ``wt`` row weights or empty, ``rows`` (n, 3)
    or empty), without grouping by pattern: ``var`` (K, D) are the
    component variances, positive.  Nothing is skipped, as in the fused
    diagonal kernels.
    """
    K, D = means.shape
    n = X.shape[0]
    prec, logc = _diagonal_constants(var)
    XO = np.zeros((D, BLOCK))
    MO = np.zeros((D, BLOCK))
    LPT = np.empty((K, BLOCK))
    RT = np.empty((K, BLOCK))
    NKv = np.zeros((K, W))  # the fused helper's per-lane counts; the counts are summed with the statistics
    WB = np.empty(BLOCK)
    LLB = np.empty(BLOCK)
    llv = vzero()
    for r0 in range(0, n, BLOCK):
        m = min(BLOCK, n - r0)
        _load_masked(X, r0, m, XO, MO)
        _block_weights(wt, r0, m, WB)
        _diagonal_logprob(XO, MO, means, prec, logc, logw, LPT)
        llv = vadd(llv, _fused_responsibilities(LPT, K, RT, NKv, WB, LLB))
        _emit_scores(LPT, LLB, r0, m, rows)
        _diagonal_masked_stats(XO, MO, m, RT, means, var, nk, sums, scatter)
    return vhsum(llv)
