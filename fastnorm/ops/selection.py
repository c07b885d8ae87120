"""Model selection by information criteria: AIC, BIC, and picking the best candidate.

From the seeds (course notes on model selection): AIC = 2k - 2 ln L, BIC = k ln n - 2 ln L,
the smaller the better; BIC penalizes parameters more once n >= e^2 (about 8 samples).
"""
import numpy as np

from .. import _validation as v
from .._dispatch import host_only

__all__ = ["aic", "bic", "select_model"]

_F64 = np.dtype(np.float64)


def _ll(log_likelihood):
    ll = v.float_array(log_likelihood, "log_likelihood")
    return ll.astype(_F64, copy=False)


def _count(a, name, positive):
    a = np.asarray(a)
    if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
        raise TypeError(f"{name} must be a number or an array of numbers, got dtype {a.dtype}")
    a = a.astype(_F64)
    if positive and not np.all(a > 0):
        raise ValueError(f"{name} must be positive")
    if not positive and not np.all(a >= 0):
        raise ValueError(f"{name} must be non-negative")
    return a


def _shape(ll, *others):
    try:
        return np.broadcast_shapes(ll.shape, *(o.shape for o in others))
    except ValueError:
        raise ValueError("log_likelihood, k (and n) must broadcast, got shapes "
                         f"{[ll.shape] + [o.shape for o in others]}") from None


@host_only("functional")
def aic(log_likelihood, k):
    """Akaike information criterion ``2 k - 2 ln L`` of each candidate model.

    ``log_likelihood`` (ln L, the maximized log-likelihood) and ``k`` (number of fitted
    parameters) broadcast: pass arrays over the candidates. Returns float64 (a float for
    scalars); smaller is better. Matches statsmodels' ``aic`` (``eval_measures.aic(llf, nobs, df_modelwc)``).

    Examples
    --------
    >>> import fastnorm.functional as fn
    >>> fn.aic([-100.0, -95.0], [2, 5])
    array([204., 200.])
    """
    ll, kk = _ll(log_likelihood), _count(k, "k", False)
    _shape(ll, kk)
    res = 2.0 * kk - 2.0 * ll
    return res[()] if res.ndim == 0 else res


@host_only("functional")
def bic(log_likelihood, k, n):
    """Bayesian information criterion ``k ln n - 2 ln L`` of each candidate model.

    ``n`` is the number of samples the models were fitted on (positive); all three
    broadcast. Smaller is better.

    Examples
    --------
    >>> import fastnorm.functional as fn
    >>> fn.bic([-100.0, -95.0], [2, 5], 100).round(3)
    array([209.21 , 213.026])
    """
    ll, kk, nn = _ll(log_likelihood), _count(k, "k", False), _count(n, "n", True)
    _shape(ll, kk, nn)
    res = kk * np.log(nn) - 2.0 * ll
    return res[()] if res.ndim == 0 else res


@host_only("functional")
def select_model(log_likelihood, k, n=None, *, criterion="aic"):
    """Index of the best candidate (the smallest criterion) and every candidate's score.

    ``criterion`` is 'aic' or 'bic' (which needs ``n``); ties go to the first candidate, NaN
    scores never win (all NaN: ValueError). Returns ``(index, scores)``.

    Examples
    --------
    >>> import fastnorm.functional as fn
    >>> best, scores = fn.select_model([-100.0, -95.0, -94.5], [2, 5, 9], 100, criterion="bic")
    >>> int(best)
    0
    """
    if criterion == "aic":
        scores = aic(log_likelihood, k)
    elif criterion == "bic":
        if n is None:
            raise ValueError("criterion='bic' needs n, the number of samples")
        scores = bic(log_likelihood, k, n)
    else:
        raise ValueError(f"criterion must be 'aic' or 'bic', got {criterion!r}")
    s = np.atleast_1d(scores)
    if s.ndim != 1:
        raise ValueError(f"select_model compares a 1-D array of candidates, got scores of shape {s.shape}")
    if s.size == 0 or np.all(np.isnan(s)):
        raise ValueError("select_model needs at least one candidate with a non-NaN score")
    return int(np.nanargmin(s)), scores
