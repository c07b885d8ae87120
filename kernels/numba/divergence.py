"""Row-wise divergences, softmax and softmax cross-entropy for Numba's CPU target.

Every function works on C-contiguous 2-D arrays whose rows are the distributions (or the
logits of one sample). Results per row are float64.

Determinism contract (shared with kernels/cython/divergence.pyx and divmath.h, bit for bit):
- ``exp`` and ``log`` are our own (fdlibm's algorithms, below), written with the same IEEE
  operations in the same order in both backends: never libm, whose results differ between
  libraries and whose calls do not vectorize. Bit casts between float64 and int64 are LLVM
  ``bitcast``s here and ``memcpy`` in C.
- per-element values (terms, exponentials) are computed by an elementwise loop into a float64
  row buffer (it vectorizes), then summed in float64 over 32 interleaved lanes (lane j holds
  elements 32k + j), lanes combined as in kernels/numba/norm.py, then the tail added in order;
- float32 logits take ``fexp32`` (float32 arithmetic) for exp(x - max), float64 ones ``fexp``;
- a row's maximum is taken over the same 32 lanes (a maximum is exact in any order);
- no fused multiply-adds (Numba does not contract without fastmath).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic

from .lanes import _blocks, _load, _splat, _store, lane_max, lane_sum

_OPTS = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

ENTROPY, KL, CROSS, JS, KL_EXACT = 0, 1, 2, 3, 4


@intrinsic
def _bits(typingctx, x):
    """The int64 whose bits are those of the float64 x."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, i):
    """The float64 whose bits are those of the int64 i."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


# fdlibm's constants (e_exp.c, e_log.c)
_LN2HI = 6.93147180369123816490e-01
_LN2LO = 1.90821492927058770002e-10
_INVLN2 = 1.44269504088896338700e+00
_SHIFT = 6755399441055744.0  # 1.5 * 2^52: adding it rounds to an integer held in the low bits
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08
_EXP_LO = -707.0  # below: 0 (the result would be under 1e-307)
_EXP_HI = 709.0   # above: inf
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT2 = 1.4142135623730951
_TINY = 2.2250738585072014e-308  # smallest normal
_TWO54 = 18014398509481984.0


@intrinsic
def _scale32(typingctx, t):
    """2^(k-1) as float32, k the integer held in the low bits of t = 1.5*2^23 + k."""
    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        i = builder.bitcast(args[0], i32)
        i = builder.shl(builder.add(i, ir.Constant(i32, 126)), ir.Constant(i32, 23))
        return builder.bitcast(i, ir.FloatType())
    return types.float32(types.float32), codegen


_F = np.float32
_L2E32 = _F(1.4426950408889634)
_SH32 = _F(12582912.0)  # 1.5 * 2^23
_LN2H32 = _F(0.693145751953125)  # 16 significant bits: k * _LN2H32 is exact
_LN2L32 = _F(1.428606765330187045e-06)
_LO32 = _F(-86.0)  # below: 0 (the result would be under 2^-124)
_ONE32, _ZERO32 = _F(1.0), _F(0.0)
_E2, _E3, _E4, _E5, _E6, _E7 = (_F(1.0 / 2), _F(1.0 / 6), _F(1.0 / 24), _F(1.0 / 120), _F(1.0 / 720),
                                _F(1.0 / 5040))


@njit(inline="always", **_OPTS)
def fexp32(d):
    """exp(d) for float32 d <= 0 in float32 arithmetic, within 1.3 float32 ulp (degree-7
    Taylor after reducing by k ln2): twice the SIMD lanes of float64. 0 below -86, NaN kept.
    Used for float32 logits, whose softmax is rounded to float32 anyway."""
    dc = _LO32 if d < _LO32 else d
    t = dc * _L2E32 + _SH32
    kf = t - _SH32
    r = (dc - kf * _LN2H32) - kf * _LN2L32
    p = _ONE32 + r * (_ONE32 + r * (_E2 + r * (_E3 + r * (_E4 + r * (_E5 + r * (_E6 + r * _E7))))))
    res = (p + p) * _scale32(t)
    return _ZERO32 if d < _LO32 else res


_VW = 16  # float32 lanes per vector of ``exps32``


@intrinsic
def exps32(typingctx, x, m32, e):
    """e[i] = float64(fexp32(x[i] - m32)) for the first n - n % 16 elements of the float32 row
    x (n = len(x)), 16 at a time as explicit <16 x float> vector code: the same float32
    operations in the same order as ``fexp32`` (plain fmul/fadd, never contracted), so the
    same bits; the loop vectorizer gave 8-wide vectors here, half the machine's width. The
    caller does the tail. (A float64 x, typed in the callers' branch for float64 rows that
    never runs it, compiles to nothing.)"""
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and x.dtype in (types.float32, types.float64) and m32 == types.float32
            and isinstance(e, types.Array) and e.ndim == 1 and e.layout == "C"
            and e.dtype == types.float64):
        return None
    if x.dtype != types.float32:
        return types.void(x, m32, e), lambda context, builder, sig, args: context.get_dummy_value()

    def codegen(context, builder, sig, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        vf = ir.VectorType(f32, _VW)
        vi = ir.VectorType(i32, _VW)
        vd = ir.VectorType(ir.DoubleType(), _VW)
        xa = context.make_array(sig.args[0])(context, builder, args[0])
        ea = context.make_array(sig.args[2])(context, builder, args[2])

        def splat(c):
            return ir.Constant(vf, [float(c)] * _VW)

        m = _splat(builder, args[1], vf)
        lo, zero = splat(_LO32), splat(_ZERO32)
        with _blocks(builder, xa, _VW) as i:
            d = builder.fsub(_load(context, builder, sig.args[0], xa, i, widen=False, width=_VW), m)
            below = builder.fcmp_ordered("<", d, lo)
            dc = builder.select(below, lo, d)
            t = builder.fadd(builder.fmul(dc, splat(_L2E32)), splat(_SH32))
            kf = builder.fsub(t, splat(_SH32))
            r = builder.fsub(builder.fsub(dc, builder.fmul(kf, splat(_LN2H32))), builder.fmul(kf, splat(_LN2L32)))
            p = splat(_E7)
            for c in (_E6, _E5, _E4, _E3, _E2, _ONE32, _ONE32):
                p = builder.fadd(splat(c), builder.fmul(r, p))
            k = builder.shl(builder.add(builder.bitcast(t, vi), ir.Constant(vi, [126] * _VW)),
                            ir.Constant(vi, [23] * _VW))
            res = builder.fmul(builder.fadd(p, p), builder.bitcast(k, vf))
            _store(builder, ea, i, builder.fpext(builder.select(below, zero, res), vd))
        return context.get_dummy_value()

    return types.void(x, m32, e), codegen


@njit(inline="always", **_OPTS)
def fexp(x):
    """exp(x) in float64 within 1 ulp (fdlibm's rational approximation after reducing by
    k ln2), with k rounded by the 1.5*2^52 shift; 0 below -707, inf above 709, NaN kept."""
    xc = _EXP_LO if x < _EXP_LO else x
    xc = _EXP_HI if xc > _EXP_HI else xc
    t = xc * _INVLN2 + _SHIFT
    kf = t - _SHIFT
    hi = xc - kf * _LN2HI
    lo = kf * _LN2LO
    r = hi - lo
    rr = r * r
    c = r - rr * (_P1 + rr * (_P2 + rr * (_P3 + rr * (_P4 + rr * _P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    # 2^(k-1) from the low bits of t (the shift drops the rest); y + y is exact
    scale = _from_bits((_bits(t) + 1022) << 52)
    res = (y + y) * scale
    res = 0.0 if x < _EXP_LO else res
    res = np.inf if x > _EXP_HI else res
    return res


@njit(inline="always", **_OPTS)
def flog(x):
    """log(x) in float64 within 1 ulp (fdlibm's e_log.c: x = 2^k m, m in [sqrt2/2, sqrt2),
    log m = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f)); log 0 = -inf, log(<0) = NaN."""
    sub = x < _TINY
    xs = x * _TWO54 if sub else x
    ix = _bits(xs)
    k = (ix >> 52) - (1077 if sub else 1023)
    m = _from_bits((ix & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    k = k + 1 if big else k
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    rr = t2 + t1
    dk = np.float64(k)
    res = dk * _LN2HI - ((hfsq - (s * (hfsq + rr) + dk * _LN2LO)) - f)
    res = -np.inf if x == 0.0 else res
    res = np.nan if x < 0.0 else res
    res = x if not (x < np.inf) else res  # +inf and NaN
    return res


@njit(inline="always", **_OPTS)
def entr(x):
    """-x log x; 0 at 0, -inf below 0 (scipy.special.entr)."""
    v = -(x * flog(x))
    v = 0.0 if x == 0.0 else v
    v = -np.inf if x < 0.0 else v
    return v


@njit(inline="always", **_OPTS)
def rel_entr(x, y):
    """x log(x / y); 0 where x = 0 <= y, inf where y = 0 < x or either is negative
    (scipy.special.rel_entr)."""
    v = x * flog(x / y)
    v = 0.0 if (x == 0.0 and y >= 0.0) else v
    v = np.inf if (x < 0.0 or y < 0.0) else v
    v = v if (x == x and y == y) else np.nan
    return v


@njit(inline="always", **_OPTS)
def rel_entr_exact(x, y):
    """rel_entr, with log x - log y where x / y overflows (y subnormal): a row's second pass
    when its sum came out inf."""
    r = x / y
    v = x * flog(r) if r < np.inf else x * (flog(x) - flog(y))
    v = 0.0 if (x == 0.0 and y >= 0.0) else v
    v = np.inf if (x < 0.0 or y < 0.0) else v
    v = v if (x == x and y == y) else np.nan
    return v


@njit(inline="always", **_OPTS)
def cross_term(x, y):
    """-x log y; 0 where x = 0 <= y, inf where y = 0 < x, NaN where either is negative."""
    v = -(x * flog(y))
    v = 0.0 if (x == 0.0 and y >= 0.0) else v
    v = np.nan if (x < 0.0 or y < 0.0) else v
    return v


@njit(inline="always", **_OPTS)
def _term(mode, x, y):
    """The summand of row divergence ``mode`` at normalized p = x, q = y."""
    if mode == ENTROPY:
        return entr(x)
    if mode == KL:
        return rel_entr(x, y)
    if mode == CROSS:
        return cross_term(x, y)
    if mode == KL_EXACT:
        return rel_entr_exact(x, y)
    mm = (x + y) * 0.5
    return rel_entr(x, mm) + rel_entr(y, mm)


@njit(inline="always", **_OPTS)
def _lane_sum(x):
    """sum of x in the fixed 32-lane order (float64)."""
    n = x.shape[0]
    n32 = n - n % 32
    s = lane_sum(x)
    for i in range(n32, n):
        s += np.float64(x[i])
    return s


@njit(**_OPTS)
def _terms(mode, p, q, rp, rq, buf):
    """buf[i] = the ``mode`` term at the normalized p[i], q[i] (an elementwise loop: it
    vectorizes; the sum is taken afterwards, in lanes)."""
    for i in range(p.shape[0]):
        buf[i] = _term(mode, p[i] * rp, q[i] * rq)


@njit(inline="always", **_OPTS)
def _div_row(mode, p, q, buf):
    """Divergence ``mode`` of one row, inputs normalized by their sums (scipy: pk / sum(pk))."""
    n = p.shape[0]
    rp = 1.0 / _lane_sum(p)
    rq = rp if mode == ENTROPY else 1.0 / _lane_sum(q)
    b = buf[:n]
    if mode == ENTROPY:
        _terms(ENTROPY, p, q, rp, rq, b)
    elif mode == KL:
        _terms(KL, p, q, rp, rq, b)
    elif mode == CROSS:
        _terms(CROSS, p, q, rp, rq, b)
    else:
        _terms(JS, p, q, rp, rq, b)
    s = _lane_sum(b)
    if mode == KL and s == np.inf:
        # inf: q = 0 < p, or p/q overflowed (q subnormal): the exact pass tells them apart
        _terms(KL_EXACT, p, q, rp, rq, b)
        s = _lane_sum(b)
    return s


@njit(inline="always", **_OPTS)
def row_chunks(m):
    return min(m, 256)


@njit(inline="always", **_OPTS)
def _div_chunk(c, nchunks, mode, p, q, out):
    m, n = p.shape
    buf = np.empty(n)
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        out[r] = _div_row(mode, p[r], q[r], buf)


@njit(**_OPTS)
def divergence_rows_serial(mode, p, q, out):
    """out[r] = sum over row r of the ``mode`` term (ENTROPY, KL, CROSS, JS = 0..3) of the
    normalized rows p[r], q[r]; in nats, JS is the sum of both relative entropies to the
    mid-point (not yet halved)."""
    nchunks = row_chunks(p.shape[0])
    for c in range(nchunks):
        _div_chunk(c, nchunks, mode, p, q, out)


@njit(parallel=True, **_OPTS)
def divergence_rows_parallel(mode, p, q, out):
    nchunks = row_chunks(p.shape[0])
    for c in prange(nchunks):
        _div_chunk(c, nchunks, mode, p, q, out)


# ---------------------------------------------------------------- softmax


@njit(inline="always", **_OPTS)
def _row_max(x):
    """max of x (NaN ignored; -inf for none) over 32 lanes (lanes.lane_max: in registers), then
    the tail in order."""
    n = x.shape[0]
    mx = lane_max(x)
    for i in range(n - n % 32, n):
        v = np.float64(x[i])
        mx = v if v > mx else mx
    return mx


@njit(**_OPTS)
def _exps(x, mx, e):
    """e[i] = exp(x[i] - mx) (elementwise: it vectorizes); float32 x: x[i] - mx and the exp in
    float32 (mx is one of x's values, so exact in float32)."""
    if x.itemsize == 4:
        m32 = np.float32(mx)
        n = x.shape[0]
        exps32(x, m32, e)
        for i in range(n - n % _VW, n):
            e[i] = np.float64(fexp32(np.float32(x[i] - m32)))
    else:
        for i in range(x.shape[0]):
            e[i] = fexp(x[i] - mx)


@njit(inline="always", **_OPTS)
def _exp_sum(x, mx, e):
    """sum exp(x - mx) in lanes; e[:n] holds the exponentials."""
    b = e[:x.shape[0]]
    _exps(x, mx, b)
    return _lane_sum(b)


@njit(inline="always", **_OPTS)
def _softmax_row(x, y, log, e):
    n = x.shape[0]
    mx = _row_max(x)
    s = _exp_sum(x, mx, e)
    if log:
        ls = flog(s)  # (x - mx) - log s: exact differences, then one rounding
        for i in range(n):
            y[i] = (x[i] - mx) - ls
    else:
        rs = 1.0 / s
        for i in range(n):
            y[i] = e[i] * rs


@njit(inline="always", **_OPTS)
def _softmax_chunk(c, nchunks, x, y, log):
    m, n = x.shape
    e = np.empty(n)
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        _softmax_row(x[r], y[r], log, e)


@njit(**_OPTS)
def softmax_rows_serial(x, y, log):
    """y[r] = softmax(x[r]) (log_softmax when ``log``): x - max, exp summed in lanes."""
    nchunks = row_chunks(x.shape[0])
    for c in range(nchunks):
        _softmax_chunk(c, nchunks, x, y, log)


@njit(parallel=True, **_OPTS)
def softmax_rows_parallel(x, y, log):
    nchunks = row_chunks(x.shape[0])
    for c in prange(nchunks):
        _softmax_chunk(c, nchunks, x, y, log)


# ---------------------------------------------------------------- softmax cross-entropy


@njit(inline="always", **_OPTS)
def _sce_row(x, label, w, has_w, wsum, ignore_index, eps, g, want_grad, dx, e, sbuf):
    """Loss of one row (float64) and, when ``want_grad``, dx = g * d(loss)/dx:
    loss = (1-eps) w_y (lse - x_y) + eps/C sum_c w_c (lse - x_c), lse = mx + log s."""
    n = x.shape[0]
    if label == ignore_index:
        if want_grad:
            for i in range(n):
                dx[i] = 0.0
        return 0.0
    mx = _row_max(x)
    s = _exp_sum(x, mx, e)
    ls = flog(s)  # lse - x_c computed as log s - (x_c - mx): no rounding at lse's magnitude
    wy = w[label] if has_w else 1.0
    loss = (1.0 - eps) * (wy * (ls - (x[label] - mx)))
    eb = eps / n
    if eps > 0.0:
        for i in range(n):  # the smoothing term's summands, summed in lanes
            sbuf[i] = (ls - (x[i] - mx)) * (w[i] if has_w else 1.0)
        loss += eb * _lane_sum(sbuf[:n])
    if want_grad:
        a = (1.0 - eps) * wy + eb * wsum
        rs = 1.0 / s
        for i in range(n):
            dx[i] = (a * (e[i] * rs) - eb * (w[i] if has_w else 1.0)) * g
        dx[label] = (a * (e[label] * rs) - (eb * wy + (1.0 - eps) * wy)) * g
    return loss


@njit(inline="always", **_OPTS)
def _sce_chunk(c, nchunks, x, labels, w, has_w, wsum, ignore_index, eps, gscale, want_grad,
               loss, dx):
    m, n = x.shape
    e = np.empty(n)
    sbuf = np.empty(n if eps > 0.0 else 0)
    for r in range(c * m // nchunks, (c + 1) * m // nchunks):
        loss[r] = _sce_row(x[r], labels[r], w, has_w, wsum, ignore_index, eps,
                           gscale[r] if want_grad else 0.0, want_grad,
                           dx[r] if want_grad else dx[0], e, sbuf)


@njit(**_OPTS)
def softmax_cross_entropy_rows_serial(x, labels, w, has_w, wsum, ignore_index, eps, gscale,
                                      want_grad, loss, dx):
    """loss[r] (float64) of each row of logits x (m, C) with class labels[r] (int64);
    dx[r] = gscale[r] * d loss[r] / d x[r] when ``want_grad`` (dx of x's dtype)."""
    nchunks = row_chunks(x.shape[0])
    for c in range(nchunks):
        _sce_chunk(c, nchunks, x, labels, w, has_w, wsum, ignore_index, eps, gscale, want_grad,
                   loss, dx)


@njit(parallel=True, **_OPTS)
def softmax_cross_entropy_rows_parallel(x, labels, w, has_w, wsum, ignore_index, eps, gscale,
                                        want_grad, loss, dx):
    nchunks = row_chunks(x.shape[0])
    for c in prange(nchunks):
        _sce_chunk(c, nchunks, x, labels, w, has_w, wsum, ignore_index, eps, gscale, want_grad,
                   loss, dx)
