"""32-lane float64 row sums for Numba, as LLVM vector code (the numba twin of
kernels/cython/lanes.h).

The fixed summation order (the determinism contract of kernels/numba/norm.py): lane j
(0 <= j < 32) accumulates elements 32k + j in order; the lanes are combined as
v[j] = (l[j] + l[8+j]) + (l[16+j] + l[24+j]) for j < 8, then
((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7)). These intrinsics sum the first n - n % 32 elements that
way; the caller adds the tail (n % 32 elements) in order.

Why intrinsics: numba compiles without SLP vectorization, so a lane loop over a scratch array
(``acc[j] += x[i + j]``) is loop-vectorized at best and loads and stores its 32 accumulators
through memory on every step; a 1024-element LayerNorm row's statistics took 290 ns that way.
Here the four 8-lane accumulators are SSA values (allocas that LLVM promotes to registers),
each step loads 4 vectors per input and widens them to float64 (exact), and there are no fused
multiply-adds (plain ``fmul``/``fadd`` without fast-math flags are never contracted), so the
bits are the lane loops' bits.

Every array argument must be 1-D and C-contiguous, of float32 or float64 (the inputs of one call
may differ in dtype); the length is the first array's.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

WIDTH = 8  # lanes per vector; 4 vectors make the 32 lanes
_F64 = ir.DoubleType()
_V64 = ir.VectorType(_F64, WIDTH)


def _is_row(a):
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype in (types.float32, types.float64))


def _splat(builder, value, vtype=_V64):
    """``value`` in every lane of a vector of type ``vtype``."""
    n = vtype.count
    v = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(vtype, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


def _load(context, builder, arytype, ary, index, widen=True, width=WIDTH):
    """The ``width`` elements of a 1-D array from ``index`` on, widened to float64 (exact)
    unless ``widen`` is false (then in the array's dtype)."""
    elt = context.get_data_type(arytype.dtype)
    ptr = builder.bitcast(builder.gep(ary.data, [index]), ir.VectorType(elt, width).as_pointer())
    v = builder.load(ptr, align=arytype.dtype.bitwidth // 8)
    return builder.fpext(v, ir.VectorType(_F64, width)) if widen and arytype.dtype == types.float32 else v


def _store(builder, ary, index, v):
    """Store the vector v at ``index`` of a 1-D array of v's element type."""
    align = 4 if isinstance(v.type.element, ir.FloatType) else 8
    builder.store(v, builder.bitcast(builder.gep(ary.data, [index]), v.type.as_pointer()), align=align)


def _blocks(builder, ary, step):
    """The loop over the first n - n % step elements of the 1-D array ``ary`` (n its length),
    ``step`` at a time: a context manager giving each block's first index."""
    n = builder.extract_value(ary.shape, 0)
    end = builder.sub(n, builder.srem(n, ir.Constant(n.type, step)))
    loop = cgutils.for_range_slice(builder, ir.Constant(n.type, 0), end, ir.Constant(n.type, step))

    class _Blocks:
        def __enter__(self):
            return loop.__enter__()[0]

        def __exit__(self, *exc):
            return loop.__exit__(*exc)

    return _Blocks()


def _if_value(builder, flag, make, otherwise):
    """``make()`` where the i1 ``flag`` is set, else the value ``otherwise``: a branch, so that
    make's loads happen only when flagged (an array not in use may be empty)."""
    with builder.if_else(flag) as (then, other):
        with then:
            made = make()
            made_in = builder.block
        with other:
            other_in = builder.block
    v = builder.phi(otherwise.type)
    v.add_incoming(made, made_in)
    v.add_incoming(otherwise, other_in)
    return v


_I8P, _I32 = ir.IntType(8).as_pointer(), ir.IntType(32)


def _prefetch(builder, ptr, write=False):
    """llvm.prefetch of the cache line at ``ptr`` (an i8*), for reading or writing, kept in all
    cache levels; it never faults and changes no value."""
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32]), "llvm.prefetch.p0")
    builder.call(fn, [ptr, ir.Constant(_I32, int(write)), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])


def _prefetcher(context, builder, arytypes, arys, lines):
    """A function ``step()`` that prefetches (for reading) the next ``lines`` cache lines of
    each of ``arys`` (1-D arrays of the same length; a shared position, stopping at the end)."""
    i64 = ir.IntType(64)
    end = builder.mul(builder.extract_value(arys[0].shape, 0), ir.Constant(i64, arytypes[0].dtype.bitwidth // 8))
    bases = [builder.bitcast(a.data, _I8P) for a in arys]
    pos = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))

    def step():
        with cgutils.for_range(builder, lines):
            at = builder.load(pos)
            with builder.if_then(builder.icmp_signed("<", at, end)):
                for base in bases:
                    _prefetch(builder, builder.gep(base, [at]))
                builder.store(builder.add(at, ir.Constant(i64, 64)), pos)

    return step


def _combine(builder, acc):
    """The fixed combination of the four 8-lane accumulators (lanes.h's lanes_combine)."""
    s = builder.fadd(builder.fadd(acc[0], acc[1]), builder.fadd(acc[2], acc[3]))
    e = [builder.extract_element(s, ir.Constant(ir.IntType(32), j)) for j in range(WIDTH)]
    return builder.fadd(builder.fadd(builder.fadd(e[0], e[1]), builder.fadd(e[2], e[3])),
                        builder.fadd(builder.fadd(e[4], e[5]), builder.fadd(e[6], e[7])))


def _lane_sums(nsums, narrays, nscalars, body, nprefetch=0):
    """An intrinsic ``f(a_1..a_narrays, [p_1..p_nprefetch,] s_1..s_nscalars)`` returning the nsums
    32-lane sums (a float, or a tuple of nsums floats) of ``body(builder, vectors, scalars)``:
    the per-element terms, given each array's 8 elements widened to float64 and the float64
    scalars broadcast. The p arrays are prefetched, one line per 64 bytes of their first
    n - n % 32 elements, step by step with the loads (p_1 for writing, the others for
    reading); no value changes."""

    def typer(typingctx, args):
        arrays, rest = args[:narrays], args[narrays:]
        pf, scalars = rest[:nprefetch], rest[nprefetch:]
        if not all(_is_row(a) for a in arrays + pf):
            return None
        if not all(isinstance(s, (types.Float, types.Integer)) for s in scalars):
            return None
        ret = types.float64 if nsums == 1 else types.UniTuple(types.float64, nsums)

        def codegen(context, builder, sig, llargs):
            arys = [context.make_array(t)(context, builder, v)
                    for t, v in zip(sig.args[:narrays + nprefetch], llargs[:narrays + nprefetch])]
            svals = [context.cast(builder, v, t, types.float64)
                     for t, v in zip(sig.args[narrays + nprefetch:], llargs[narrays + nprefetch:])]
            splats = [_splat(builder, v) for v in svals]
            accs = [[cgutils.alloca_once_value(builder, ir.Constant(_V64, [0.0] * WIDTH))
                     for _ in range(4)] for _ in range(nsums)]
            with _blocks(builder, arys[0], 32) as i:
                for q, (t, a) in enumerate(zip(sig.args[narrays:narrays + nprefetch],
                                               arys[narrays:narrays + nprefetch])):
                    base = builder.bitcast(builder.gep(a.data, [i]), _I8P)
                    for off in range(0, 32 * t.dtype.bitwidth // 8, 64):
                        _prefetch(builder, builder.gep(base, [ir.Constant(_I32, off)]), write=q == 0)
                for k in range(4):
                    at = builder.add(i, ir.Constant(i.type, WIDTH * k))
                    vecs = [_load(context, builder, t, a, at) for t, a in zip(sig.args[:narrays], arys[:narrays])]
                    terms = body(builder, vecs, splats)
                    for s in range(nsums):
                        builder.store(builder.fadd(builder.load(accs[s][k]), terms[s]), accs[s][k])
            sums = [_combine(builder, [builder.load(p) for p in accs[s]]) for s in range(nsums)]
            if nsums == 1:
                return sums[0]
            return context.make_tuple(builder, sig.return_type, sums)

        return ret(*args), codegen

    # intrinsic needs the arity spelled out: typer(typingctx, a0, a1, ...)
    nargs = narrays + nprefetch + nscalars
    names = ", ".join(f"a{k}" for k in range(nargs))
    scope = {"typer": typer}
    exec(f"def fixed(typingctx, {names}):\n    return typer(typingctx, ({names},))", scope)
    return intrinsic(scope["fixed"])


def _fabs(builder, v):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V64, [_V64]), "llvm.fabs.v8f64")
    return builder.call(fn, [v])


# sum x
lane_sum = _lane_sums(1, 1, 0, lambda b, v, s: [v[0]])
# sum (x - mean)^2; with mean 0.0 the sum of squares (x - 0.0 == x)
lane_sqdev = _lane_sums(1, 1, 1, lambda b, v, s: [b.fmul(d, d) for d in [b.fsub(v[0], s[0])]])


def _shifted(b, v, s):
    d = b.fsub(v[0], s[0])
    return [d, b.fmul(d, d)]


# (sum (x - c), sum (x - c)^2): lane_shifted(x, c), one pass
lane_shifted = _lane_sums(2, 1, 1, _shifted)
# sum |x|
lane_abs = _lane_sums(1, 1, 0, lambda b, v, s: [_fabs(b, v[0])])
# sum a * x
lane_dot = _lane_sums(1, 2, 0, lambda b, v, s: [b.fmul(v[0], v[1])])


def _grad(b, g, x, mean, rstd):
    return [g, b.fmul(g, b.fmul(b.fsub(x, mean), rstd))]


# (sum g, sum g * ((x - mean) * rstd)), g = dy: lane_grad(dy, x, mean, rstd)
lane_grad = _lane_sums(2, 2, 2, lambda b, v, s: _grad(b, v[0], v[1], s[0], s[1]))
# the same with g = dy * w: lane_grad_w(dy, w, x, mean, rstd)
lane_grad_w = _lane_sums(2, 3, 2, lambda b, v, s: _grad(b, b.fmul(v[0], v[1]), v[2], s[0], s[1]))
# the two above, prefetching dx (for writing), ndy and nx step by step:
# lane_grad_pf(dy, x, dx, ndy, nx, mean, rstd), lane_grad_w_pf(dy, w, x, dx, ndy, nx, mean, rstd)
lane_grad_pf = _lane_sums(2, 2, 2, lambda b, v, s: _grad(b, v[0], v[1], s[0], s[1]), nprefetch=3)
lane_grad_w_pf = _lane_sums(2, 3, 2, lambda b, v, s: _grad(b, b.fmul(v[0], v[1]), v[2], s[0], s[1]),
                            nprefetch=3)


#: bytes prefetched ahead at most (kernels/cython/lanes.h's LANES_PREFETCH_MAX): more would
#: not stay in L1
PREFETCH_MAX = 16384


@intrinsic
def prefetch_read(typingctx, a, i):
    """Prefetches the cache line of a[i] for reading (llvm.prefetch; never faults, changes no
    value); a is 1-D."""
    if not (isinstance(a, types.Array) and a.ndim == 1 and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        _prefetch(builder, builder.bitcast(ptr, _I8P))
        return context.get_dummy_value()

    return types.void(a, i), codegen


# ---------------------------------------------------------------- normalized rows


@intrinsic
def row_scale(typingctx, x, w, b, y, mean, rstd, has_w, has_b):
    """The output pass of a normalized row over its first n - n % 8 elements, 8 per step
    (kernels/cython/norm.pyx's output loop): t = (x[i] - mean) * rstd in float64 rounded to y's
    dtype, then t * w[i] with has_w and + b[i] with has_b, each in y's dtype and rounded (no
    fused multiply-add); w, b not used may be empty. x is read before y is written (y may
    be x)."""
    rows = (x, w, b, y)
    if not (all(_is_row(a) for a in rows) and len({a.dtype for a in rows}) == 1
            and all(isinstance(s, (types.Float, types.Integer)) for s in (mean, rstd))
            and all(isinstance(f, types.Boolean) for f in (has_w, has_b))):
        return None

    def codegen(context, builder, sig, args):
        xt = sig.args[0]
        xa, wa, ba, ya = (context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:4], args[:4]))
        mu, rs = (_splat(builder, context.cast(builder, v, t, types.float64))
                  for t, v in zip(sig.args[4:6], args[4:6]))
        flag_w, flag_b = args[6:8]
        with _blocks(builder, xa, WIDTH) as i:
            t = builder.fmul(builder.fsub(_load(context, builder, xt, xa, i), mu), rs)
            if xt.dtype == types.float32:
                t = builder.fptrunc(t, ir.VectorType(ir.FloatType(), WIDTH))
            t = _if_value(builder, flag_w, lambda: builder.fmul(t, _load(context, builder, xt, wa, i, widen=False)), t)
            t = _if_value(builder, flag_b, lambda: builder.fadd(t, _load(context, builder, xt, ba, i, widen=False)), t)
            _store(builder, ya, i, t)
        return context.get_dummy_value()

    return types.void(x, w, b, y, mean, rstd, has_w, has_b), codegen


@intrinsic
def row_dx(typingctx, dy, w, x, dx, pdw, pdb, mean, rstd, mg, mgx, has_w, want_dw, want_db):
    """The LayerNorm/RMSNorm backward's dx pass over the first n - n % 8 elements of a row,
    8 per step (kernels/cython/lanes.h's lanes_dx): d = dy[i] and xhat = (x[i] - mean) * rstd in
    float64, g = d * w[i] (d without has_w), dx[i] = ((g - mg) - xhat * mgx) * rstd rounded to
    dx's dtype; pdw[i] += d * xhat with want_dw, pdb[i] += d with want_db (float64, 1-D;
    arrays not used may be empty). dy[i] is read before dx[i] is written (dx may be dy)."""
    rows = (dy, w, x, dx)
    if not (all(_is_row(a) for a in rows) and len({a.dtype for a in rows}) == 1
            and _f64_row(pdw) and _f64_row(pdb)
            and all(isinstance(s, (types.Float, types.Integer)) for s in (mean, rstd, mg, mgx))
            and all(isinstance(f, types.Boolean) for f in (has_w, want_dw, want_db))):
        return None

    def codegen(context, builder, sig, args):
        t = sig.args[0]
        dya, wa, xa, dxa, pwa, pba = (context.make_array(k)(context, builder, v)
                                      for k, v in zip(sig.args[:6], args[:6]))
        mu, rs, mg_, mgx_ = (_splat(builder, context.cast(builder, v, k, types.float64))
                             for k, v in zip(sig.args[6:10], args[6:10]))
        flag_w, flag_dw, flag_db = args[10:13]
        f64 = sig.args[4]  # the partials' array type
        with _blocks(builder, xa, WIDTH) as i:
            d = _load(context, builder, t, dya, i)
            xhat = builder.fmul(builder.fsub(_load(context, builder, t, xa, i), mu), rs)
            g = _if_value(builder, flag_w, lambda: builder.fmul(d, _load(context, builder, t, wa, i)), d)
            v = builder.fmul(builder.fsub(builder.fsub(g, mg_), builder.fmul(xhat, mgx_)), rs)
            if t.dtype == types.float32:
                v = builder.fptrunc(v, ir.VectorType(ir.FloatType(), WIDTH))
            _store(builder, dxa, i, v)
            with builder.if_then(flag_dw):
                _store(builder, pwa, i, builder.fadd(_load(context, builder, f64, pwa, i), builder.fmul(d, xhat)))
            with builder.if_then(flag_db):
                _store(builder, pba, i, builder.fadd(_load(context, builder, f64, pba, i), d))
        return context.get_dummy_value()

    return types.void(dy, w, x, dx, pdw, pdb, mean, rstd, mg, mgx, has_w, want_dw, want_db), codegen


# ---------------------------------------------------------------- column tiles


def _f64_row(a):
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.float64


def _ints(*ts):
    return all(isinstance(t, types.Integer) for t in ts)


def _i64(context, builder, sig, args, *ks):
    return [context.cast(builder, args[k], sig.args[k], types.int64) for k in ks]


@intrinsic
def col_moments32(typingctx, x, rows, ncols, j0, s, q, nxt, lines):
    """One 32-column tile of a row-major block (kernels/cython/lanes.h's cols_moments, one tile):
    x the block, flat (rows * ncols elements); for j in j0..j0+32, in row order,
    s[j] = (sum of x[r, j]) / rows, then q[j] = sum of (x[r, j] - s[j])^2 (s, q float64, 1-D).
    Each column is one lane of four 8-lane accumulators kept in registers. ``lines`` cache lines
    of ``nxt`` (1-D) are prefetched per row of each pass (no value changes; 0: none)."""
    if not (_is_row(x) and _is_row(nxt) and _ints(rows, ncols, j0, lines) and _f64_row(s) and _f64_row(q)):
        return None

    def codegen(context, builder, sig, args):
        xt = sig.args[0]
        xa, sa, qa, na = (context.make_array(sig.args[k])(context, builder, args[k]) for k in (0, 4, 5, 6))
        rows_, ncols_, j0_, lines_ = _i64(context, builder, sig, args, 1, 2, 3, 7)
        prefetch = _prefetcher(context, builder, [sig.args[6]], [na], lines_)
        offs = [builder.add(j0_, ir.Constant(j0_.type, WIDTH * k)) for k in range(4)]
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V64, [0.0] * WIDTH)) for _ in range(4)]

        def pass_(term):
            with cgutils.for_range(builder, rows_) as loop:
                base = builder.mul(loop.index, ncols_)
                for k in range(4):
                    v = _load(context, builder, xt, xa, builder.add(base, offs[k]))
                    builder.store(builder.fadd(builder.load(accs[k]), term(k, v)), accs[k])
                prefetch()

        pass_(lambda k, v: v)
        nr = _splat(builder, builder.sitofp(rows_, _F64))
        means = [builder.fdiv(builder.load(accs[k]), nr) for k in range(4)]
        for k in range(4):
            _store(builder, sa, offs[k], means[k])
            builder.store(ir.Constant(_V64, [0.0] * WIDTH), accs[k])

        def sq(k, v):
            d = builder.fsub(v, means[k])
            return builder.fmul(d, d)

        pass_(sq)
        for k in range(4):
            _store(builder, qa, offs[k], builder.load(accs[k]))
        return context.get_dummy_value()

    return types.void(x, rows, ncols, j0, s, q, nxt, lines), codegen


@intrinsic
def col_grad32(typingctx, dy, x, rows, ncols, j0, mu, rs, s1, s2, ndy, nx, lines):
    """One 32-column tile of a row-major block (lanes.h's cols_grad, one tile): dy and x the
    block, flat; for j in j0..j0+32, in row order, with g = dy[r, j]: s1[j] = sum g,
    s2[j] = sum g * ((x[r, j] - mu[j]) * rs[j]) (mu, rs, s1, s2 float64, 1-D). ``lines`` cache
    lines of each of ndy and nx (1-D, the same length) are prefetched per row (no value changes;
    0: none)."""
    if not (_is_row(dy) and _is_row(x) and _is_row(ndy) and _is_row(nx) and _ints(rows, ncols, j0, lines)
            and all(_f64_row(a) for a in (mu, rs, s1, s2))):
        return None

    def codegen(context, builder, sig, args):
        t = sig.args
        a = {k: context.make_array(t[k])(context, builder, args[k]) for k in (0, 1, 5, 6, 7, 8, 9, 10)}
        rows_, ncols_, j0_, lines_ = _i64(context, builder, sig, args, 2, 3, 4, 11)
        prefetch = _prefetcher(context, builder, [t[9], t[10]], [a[9], a[10]], lines_)
        offs = [builder.add(j0_, ir.Constant(j0_.type, WIDTH * k)) for k in range(4)]
        m = [_load(context, builder, t[5], a[5], o) for o in offs]
        w = [_load(context, builder, t[6], a[6], o) for o in offs]
        sg = [cgutils.alloca_once_value(builder, ir.Constant(_V64, [0.0] * WIDTH)) for _ in range(4)]
        sgx = [cgutils.alloca_once_value(builder, ir.Constant(_V64, [0.0] * WIDTH)) for _ in range(4)]
        with cgutils.for_range(builder, rows_) as loop:
            base = builder.mul(loop.index, ncols_)
            for k in range(4):
                idx = builder.add(base, offs[k])
                g = _load(context, builder, t[0], a[0], idx)
                xhat = builder.fmul(builder.fsub(_load(context, builder, t[1], a[1], idx), m[k]), w[k])
                builder.store(builder.fadd(builder.load(sg[k]), g), sg[k])
                builder.store(builder.fadd(builder.load(sgx[k]), builder.fmul(g, xhat)), sgx[k])
            prefetch()
        for k in range(4):
            _store(builder, a[7], offs[k], builder.load(sg[k]))
            _store(builder, a[8], offs[k], builder.load(sgx[k]))
        return context.get_dummy_value()

    return types.void(dy, x, rows, ncols, j0, mu, rs, s1, s2, ndy, nx, lines), codegen


# ---------------------------------------------------------------- maximum


@intrinsic
def lane_max(typingctx, x):
    """The 32-lane maximum of the first n - n % 32 elements of x (kernels/cython/divmath.h's
    dm_row_max order): lane j keeps acc = v if v > acc else acc over elements 32k + j, from -inf
    (NaN never replaces; -0.0 and 0.0 keep the first seen), then the lanes in order 0..31 the
    same way; the caller takes the tail. Four 8-lane vectors in registers."""
    if not _is_row(x):
        return None

    def codegen(context, builder, sig, args):
        xt = sig.args[0]
        xa = context.make_array(xt)(context, builder, args[0])
        ninf = float("-inf")
        accs = [cgutils.alloca_once_value(builder, ir.Constant(_V64, [ninf] * WIDTH)) for _ in range(4)]
        with _blocks(builder, xa, 32) as i:
            for k in range(4):
                v = _load(context, builder, xt, xa, builder.add(i, ir.Constant(i.type, WIDTH * k)))
                a = builder.load(accs[k])
                builder.store(builder.select(builder.fcmp_ordered(">", v, a), v, a), accs[k])
        mx = ir.Constant(_F64, ninf)
        for k in range(4):
            a = builder.load(accs[k])
            for j in range(WIDTH):
                e = builder.extract_element(a, ir.Constant(ir.IntType(32), j))
                mx = builder.select(builder.fcmp_ordered(">", e, mx), e, mx)
        return mx

    return types.float64(x), codegen
