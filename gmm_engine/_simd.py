"""Float64 vectors of one machine register for the numba kernels.

Numba's loop vectoriser keeps accumulators in memory, so a product such as
``Y = D @ U`` runs at ~5 GFLOP/s per core here however the loops are
written (the SLP vectoriser that would pack scalar accumulators is off in
numba).  These intrinsics give the kernels a value type that LLVM keeps in
a vector register, so a register tile of eight accumulators stays in
registers across the inner loop, the way a BLAS micro-kernel does.

The width :data:`W` is that of one register: eight lanes (``<8 x double>``,
one zmm register) where the CPU has AVX-512, four (one ymm register)
otherwise.  Eight-lane vectors on an AVX2 CPU would take two ymm registers
each, and the kernels' tiles of 8 accumulators plus their operands would
then need more than its 16 registers: the spills made every kernel about
twice as slow.  ``GMM_STREAM_SIMD_LANES=4|8`` forces a width (for tests of
both code paths on one machine); kernels are then not cached on disk, since
numba's cache knows the CPU but not this choice.

Every load and store takes a C-contiguous array and a *flat* element
offset; there is no bounds checking, so callers size their buffers in
whole vectors.  Arithmetic is IEEE float64 lane by lane; ``vfma`` rounds
once.  ``vexp_neg`` and ``vlog_ge1`` are polynomial approximations with a
maximum error of 2-3 ulp on their stated domains.
"""

from __future__ import annotations

import math
import os

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

def _lanes() -> int:
    forced = os.environ.get("GMM_STREAM_SIMD_LANES")
    if forced:
        if forced not in ("4", "8"):
            raise ValueError(f"GMM_STREAM_SIMD_LANES must be 4 or 8, got {forced!r}; unset it to use the CPU's width")
        return int(forced)
    import llvmlite.binding as llvm

    return 8 if llvm.get_host_cpu_features().get("avx512f") else 4


#: lanes per vector: one register's worth of float64 (8 with AVX-512, else 4)
W = _lanes()
#: the kernels may be cached on disk (the width follows from the CPU, which the cache key holds)
CACHE = not os.environ.get("GMM_STREAM_SIMD_LANES")

_F64 = ir.DoubleType()
_VT = ir.VectorType(_F64, W)
_IT = ir.VectorType(ir.IntType(64), W)
_I32 = ir.IntType(32)


class F64x8Type(types.Type):
    """Numba type of an eight-lane float64 vector."""

    def __init__(self):
        super().__init__(name="f64x8")


f64x8 = F64x8Type()


@register_model(F64x8Type)
class _F64x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VT)


def _const(value):
    return ir.Constant(_VT, [float(value)] * W)


def _iconst(value):
    return ir.Constant(_IT, [int(value)] * W)


def _llvm_fn(builder, name, ret, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _fma(builder, a, b, c):
    return builder.call(_llvm_fn(builder, f"llvm.fma.v{W}f64", _VT, [_VT] * 3), [a, b, c])


def _splat(builder, x):
    v = builder.insert_element(ir.Constant(_VT, ir.Undefined), x, ir.Constant(_I32, 0))
    mask = ir.Constant(ir.VectorType(_I32, W), [0] * W)
    return builder.shuffle_vector(v, ir.Constant(_VT, ir.Undefined), mask)


def _element_ptr(context, builder, arrty, arr, idx, idxty):
    ary = context.make_array(arrty)(context, builder, arr)
    idx = context.cast(builder, idx, idxty, types.intp)
    return builder.gep(ary.data, [idx])


def _check_array(arr):
    if not (isinstance(arr, types.Array) and arr.dtype == types.float64 and arr.layout == "C"):
        raise TypeError("f64x8 loads and stores need a C-contiguous float64 array, got %s" % arr)


# ---------------------------------------------------------------------------
# memory


@intrinsic
def vload(typingctx, arr, idx):
    """The W float64 at flat offsets ``idx .. idx + W - 1`` of ``arr``."""
    _check_array(arr)
    sig = f64x8(arr, idx)

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return builder.load(builder.bitcast(p, _VT.as_pointer()), align=8)

    return sig, codegen


@intrinsic
def vstore(typingctx, arr, idx, v):
    """Write ``v`` to flat offsets ``idx .. idx + W - 1`` of ``arr``."""
    _check_array(arr)
    sig = types.void(arr, idx, f64x8)

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        builder.store(args[2], builder.bitcast(p, _VT.as_pointer()), align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def vbcast(typingctx, arr, idx):
    """The float64 at flat offset ``idx`` of ``arr`` in every lane (one broadcast load)."""
    _check_array(arr)
    sig = f64x8(arr, idx)

    def codegen(context, builder, sig, args):
        p = _element_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1])
        return _splat(builder, builder.load(p))

    return sig, codegen


# ---------------------------------------------------------------------------
# construction and reduction


@intrinsic
def vsplat(typingctx, x):
    """``x`` in every lane."""
    sig = f64x8(types.float64)

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])

    return sig, codegen


@intrinsic
def vzero(typingctx):
    sig = f64x8()

    def codegen(context, builder, sig, args):
        return _const(0.0)

    return sig, codegen


@intrinsic
def viota(typingctx, start):
    """``(start, start + 1, ..., start + 7)``."""
    sig = f64x8(types.float64)

    def codegen(context, builder, sig, args):
        return builder.fadd(_splat(builder, args[0]), ir.Constant(_VT, [float(i) for i in range(W)]))

    return sig, codegen


@intrinsic
def vhsum(typingctx, v):
    """Sum of the lanes, pairwise: ((0+4)+(2+6)) + ((1+5)+(3+7))."""
    sig = types.float64(f64x8)

    def codegen(context, builder, sig, args):
        v = args[0]
        n = W
        while n > 1:
            h = n // 2
            lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, h), list(range(h))))
            hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, h), list(range(h, n))))
            v = builder.fadd(lo, hi)
            n = h
        return builder.extract_element(v, ir.Constant(_I32, 0))

    return sig, codegen


# ---------------------------------------------------------------------------
# arithmetic


def _binary(op):
    @intrinsic
    def fn(typingctx, a, b):
        sig = f64x8(f64x8, f64x8)

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(*args)

        return sig, codegen

    return fn


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` rounded once."""
    sig = f64x8(f64x8, f64x8, f64x8)

    def codegen(context, builder, sig, args):
        return _fma(builder, *args)

    return sig, codegen


@intrinsic
def vmax(typingctx, a, b):
    """Lane-wise maximum (a NaN lane takes the other operand)."""
    sig = f64x8(f64x8, f64x8)

    def codegen(context, builder, sig, args):
        return builder.call(_llvm_fn(builder, f"llvm.maxnum.v{W}f64", _VT, [_VT] * 2), list(args))

    return sig, codegen


@intrinsic
def vselect_ge(typingctx, a, b, x, y):
    """Lane-wise ``x if a >= b else y``; a comparison with NaN is false."""
    sig = f64x8(f64x8, f64x8, f64x8, f64x8)

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">=", args[0], args[1]), args[2], args[3])

    return sig, codegen


# ---------------------------------------------------------------------------
# transcendental functions on restricted domains

_LN2_HI = 6.93145751953125e-1
_LN2_LO = 1.42860682030941723212e-6


@intrinsic
def vexp_neg(typingctx, x):
    """``exp(x)`` for lanes ``x <= 0``; lanes below -708, -inf and NaN give 0.

    Cody-Waite reduction ``x = n ln2 + r`` with ``|r| <= ln2 / 2`` and a
    degree-12 Taylor polynomial; error at most 2 ulp.  The cut at -708
    keeps results normal (``exp(-708) = 3.3e-308``), so no later product
    meets a subnormal operand.
    """
    sig = f64x8(f64x8)

    def codegen(context, builder, sig, args):
        x = args[0]
        ok = builder.fcmp_ordered(">=", x, _const(-708.0))
        xs = builder.select(ok, x, _const(0.0))
        rint = _llvm_fn(builder, f"llvm.rint.v{W}f64", _VT, [_VT])
        n = builder.call(rint, [builder.fmul(xs, _const(1.4426950408889634))])
        r = _fma(builder, n, _const(-_LN2_HI), xs)
        r = _fma(builder, n, _const(-_LN2_LO), r)
        p = _const(1.0 / math.factorial(12))
        for i in range(11, -1, -1):
            p = _fma(builder, p, r, _const(1.0 / math.factorial(i)))
        bits = builder.shl(builder.add(builder.fptosi(n, _IT), _iconst(1023)), _iconst(52))
        return builder.select(ok, builder.fmul(p, builder.bitcast(bits, _VT)), _const(0.0))

    return sig, codegen


@intrinsic
def vlog_ge1(typingctx, x):
    """``log(x)`` for finite lanes ``x >= 1``; error at most 3 ulp.

    ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)), and
    ``log m = 2 atanh((m - 1) / (m + 1))`` by its odd series to ``f^21``.
    """
    sig = f64x8(f64x8)

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _IT)
        e = builder.sub(builder.lshr(bits, _iconst(52)), _iconst(1023))
        mbits = builder.or_(builder.and_(bits, _iconst(0x000FFFFFFFFFFFFF)), _iconst(0x3FF0000000000000))
        m = builder.bitcast(mbits, _VT)
        big = builder.fcmp_ordered(">", m, _const(math.sqrt(2.0)))
        m = builder.select(big, builder.fmul(m, _const(0.5)), m)
        e = builder.select(big, builder.add(e, _iconst(1)), e)
        ef = builder.sitofp(e, _VT)
        f = builder.fdiv(builder.fsub(m, _const(1.0)), builder.fadd(m, _const(1.0)))
        f2 = builder.fmul(f, f)
        p = _const(2.0 / 21.0)
        for k in range(19, 0, -2):
            p = _fma(builder, p, f2, _const(2.0 / k))
        r = _fma(builder, ef, _const(_LN2_LO), builder.fmul(p, f))
        return _fma(builder, ef, _const(_LN2_HI), r)

    return sig, codegen
