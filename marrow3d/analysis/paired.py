"""Paired statistics of one arm against a control arm, paired by seed.

Two arms of a branching sweep share each seed's history up to the branch point and differ only
by their therapy from then on, so the difference ``d_i = arm_i - control_i`` of seed ``i``
removes the seed-to-seed variation of the leukemia itself. For the ``n`` seeds where both
values are finite:

``mean_diff``, ``sd_diff``
    Mean and sample standard deviation (``ddof = 1``) of ``d``.
``t_low``, ``t_high``, ``p_t``
    Two-sided ``conf`` t-interval ``mean_diff -+ t_{(1+conf)/2, n-1} sd_diff / sqrt(n)`` and the
    paired t-test p-value (``scipy.stats.ttest_rel``). Needs ``n >= 2``; when every ``d`` is
    the same (``sd_diff = 0``) the interval is that value and ``p_t`` is NaN (t undefined).
``boot_low``, ``boot_high``
    Percentile bootstrap ``conf`` interval of the mean of ``d`` (resampling seeds with
    replacement, ``n_boot`` resamples, ``numpy.random.PCG64(boot_seed)``: reproducible). It
    assumes nothing about the shape of ``d``, which for counts near zero is far from normal.
``n_pos``, ``n_zero``, ``n_neg``, ``p_sign``
    Seeds with ``d > 0``, ``d == 0`` (exactly: identical trajectories give identical values)
    and ``d < 0``, and the two-sided sign-test p-value (``scipy.stats.binomtest`` of ``n_pos``
    in ``n_pos + n_neg`` at 1/2; 1 when every ``d`` is zero).

Time-to-event endpoints with censoring are compared as *restricted* times: a run without the
event by its end counts as the time to its end (:func:`restricted_time`). The difference is
then a difference of event-free time within the horizon; a pair where both runs are censored
is a tie (``d = 0``), and a pair where one is censored has a lower bound on ``|d|``, of the
right sign.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["STAT_COLUMNS", "paired_stats", "sign_counts", "restricted_time"]

#: Keys of :func:`paired_stats`, in order.
STAT_COLUMNS = ("n", "arm_mean", "control_mean", "mean_diff", "sd_diff", "t_low", "t_high", "p_t",
                "boot_low", "boot_high", "n_pos", "n_zero", "n_neg", "p_sign")


def sign_counts(d: np.ndarray) -> tuple[int, int, int]:
    """Numbers of positive, exactly zero and negative entries of ``d`` (NaN ignored)."""
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    return int((d > 0).sum()), int((d == 0).sum()), int((d < 0).sum())


def restricted_time(event_time: np.ndarray, horizon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Event times restricted to the horizon, and which were censored.

    Parameters
    ----------
    event_time : array of float
        Time of the event [d]; NaN where it did not happen within the run.
    horizon : array of float
        Time the run was observed until [d], on the same clock.

    Returns
    -------
    (time, censored) : (ndarray of float, ndarray of bool)
        ``min(event_time, horizon)``, and ``horizon`` where there was no event (censored).
    """
    t = np.asarray(event_time, dtype=np.float64)
    h = np.broadcast_to(np.asarray(horizon, dtype=np.float64), t.shape)
    censored = ~np.isfinite(t)
    return np.where(censored, h, np.minimum(t, h)), censored


def paired_stats(arm, control, *, conf: float = 0.95, n_boot: int = 10_000, boot_seed: int = 0) -> dict[str, float]:
    """Paired comparison of ``arm`` with ``control`` (equal-length arrays, one entry per seed).

    Parameters
    ----------
    arm, control : array_like of float
        The endpoint per seed, in the same seed order; pairs with a NaN are left out.
    conf : float
        Confidence level of both intervals.
    n_boot : int
        Bootstrap resamples.
    boot_seed : int
        Seed of the bootstrap's generator.

    Returns
    -------
    dict
        :data:`STAT_COLUMNS` (see the module docstring); ``n`` = 0 gives NaN statistics and zero
        counts.
    """
    from scipy import stats

    a = np.asarray(arm, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    if a.shape != c.shape:
        raise ValueError(f"arm and control have different lengths ({a.size} and {c.size})")
    ok = np.isfinite(a) & np.isfinite(c)
    a, c = a[ok], c[ok]
    d = a - c
    n = int(d.size)
    out: dict[str, float] = {k: math.nan for k in STAT_COLUMNS}
    out["n"] = n
    out["n_pos"], out["n_zero"], out["n_neg"] = sign_counts(d)
    if n == 0:
        return out
    out["arm_mean"], out["control_mean"] = float(a.mean()), float(c.mean())
    mean = float(d.mean())
    out["mean_diff"] = mean
    n_signed = int(out["n_pos"] + out["n_neg"])
    out["p_sign"] = float(stats.binomtest(int(out["n_pos"]), n_signed, 0.5).pvalue) if n_signed else 1.0
    if n >= 2:
        sd = float(d.std(ddof=1))
        out["sd_diff"] = sd
        if sd > 0:
            half = float(stats.t.ppf(0.5 + conf / 2.0, n - 1)) * sd / math.sqrt(n)
            out["t_low"], out["t_high"] = mean - half, mean + half
            out["p_t"] = float(stats.ttest_rel(a, c).pvalue)
        else:
            out["t_low"] = out["t_high"] = mean
        rng = np.random.Generator(np.random.PCG64(boot_seed))
        means = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
        lo, hi = np.quantile(means, [0.5 - conf / 2.0, 0.5 + conf / 2.0])
        out["boot_low"], out["boot_high"] = float(lo), float(hi)
    return out
