"""Plasma pharmacokinetics of a therapy schedule, in closed form, and the niche-agent effects.

Linear PK means every dose adds its own curve (superposition), and every curve of a one- or
two-compartment model with optional first-order absorption is a sum of exponentials. So the
plasma concentration of an agent is

    C(t) = sum_doses sum_j  amount_d * c_j * g_j(t - start_d; duration_d)

with the unit impulse response ``sum_j c_j exp(-r_j t)`` and ``g`` the response of one
exponential to a bolus (``exp(-r s)``) or to a zero-order infusion of length ``T``
(``(1 - exp(-r min(s, T))) exp(-r max(s - T, 0)) / (r T)``). Exposure (AUC) uses the exact
antiderivative of the same expressions. Nothing is integrated numerically, so every value is
exact to rounding and costs a few vector operations.

**No state**: concentrations are a pure function of the therapy config and the time, so a
:class:`PlasmaPK` needs nothing in a checkpoint -- a resumed run rebuilds it from the config
and gets bit-identical values.

Units: time in hours from the start of the run, concentrations in uM (total drug in plasma),
AUC in uM*h, doses internally in umol per kg body weight.

Degenerate rates: chaining a first-order stage (absorption ``ka`` or effect link ``ke0``)
with an equal disposition rate would need a ``t exp(-r t)`` term. Instead the stage rate is
moved by a relative 1e-6 (see :func:`add_first_order_stage`), which changes concentrations by
about that relative amount and keeps the pure sum-of-exponentials form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config.therapy import (
    AGENTS,
    AgentPK,
    DeferoxamineEffect,
    PlerixaforEffect,
    TherapyConfig,
)
from .errors import ConfigError

__all__ = [
    "ExpSum",
    "iv_bolus_response",
    "add_first_order_stage",
    "PlasmaPK",
    "hill_fraction",
    "plerixafor_release_multiplier",
    "cxcr4_occupancy",
    "release_multiplier_from_occupancy",
    "deferoxamine_protection",
]

#: Two rates closer than this (relative) count as equal when a stage is chained.
_SAME_RATE_REL = 1e-7
#: How far an equal stage rate is moved (relative).
_RATE_SHIFT_REL = 1e-6
#: Elements of the (times x doses x exponentials) work array per chunk (bounds memory).
_CHUNK_ELEMENTS = 2_000_000
#: Bisection depth when refining the presence bound on a long window.
_PRESENCE_DEPTH = 8


# --------------------------------------------------------------------------------------------
# Impulse responses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpSum:
    """A unit impulse response ``h(t) = sum_j coefs[j] * exp(-rates_per_h[j] * t)``, t >= 0.

    ``coefs`` are in uM per (umol/kg) of dose, ``rates_per_h`` in 1/h (all > 0).
    """

    rates_per_h: np.ndarray
    coefs: np.ndarray

    def __call__(self, t_h: Any) -> np.ndarray:
        t = np.asarray(t_h, dtype=float)[..., None]
        return np.where(t >= 0.0, np.exp(-self.rates_per_h * np.maximum(t, 0.0)), 0.0) @ self.coefs

    def area(self) -> float:
        """Integral of the response over [0, inf) (uM*h per umol/kg) = 1/CL for plasma."""
        return float(np.sum(self.coefs / self.rates_per_h))


def iv_bolus_response(pk: AgentPK, kg_per_m2: float) -> ExpSum:
    """Plasma response to an IV bolus of 1 umol/kg.

    The shape comes from the half-lives (and ``fraction_alpha``); the scale ``C0`` is fixed by
    the clearance, because the area under the response must be ``1 / CL``:
    ``C0 = 1 / (CL * sum_j f_j / r_j)``.
    """
    rates, shares = pk.disposition()
    r = np.asarray(rates, dtype=float)
    f = np.asarray(shares, dtype=float)
    cl = pk.clearance_per_kg(kg_per_m2)
    c0 = 1.0 / (cl * float(np.sum(f / r)))
    return ExpSum(r, c0 * f)


def add_first_order_stage(resp: ExpSum, rate_per_h: float, gain: float = 1.0) -> ExpSum:
    """Response of ``resp`` fed through a first-order stage ``x' = rate (u - x)`` first or after.

    Convolution with ``rate * exp(-rate t)`` maps ``c exp(-r t)`` to
    ``c rate / (rate - r) (exp(-r t) - exp(-rate t))`` -- still a sum of exponentials, with one
    more rate. Used for absorption from an s.c./i.m. depot (``gain`` = bioavailability) and for
    an effect-site link (``gain`` = 1). Since convolution commutes, the order of stages does not
    matter.
    """
    k = float(rate_per_h)
    # Equal rates would need a t*exp(-r t) term; nudge the stage rate instead (module docstring).
    for _ in range(len(resp.rates_per_h) + 1):
        close = np.abs(k - resp.rates_per_h) <= _SAME_RATE_REL * np.maximum(k, resp.rates_per_h)
        if not close.any():
            break
        k *= 1.0 + _RATE_SHIFT_REL
    coefs = gain * resp.coefs * k / (k - resp.rates_per_h)
    return ExpSum(np.append(resp.rates_per_h, k), np.append(coefs, -coefs.sum()))


# --------------------------------------------------------------------------------------------
# Dose superposition
# --------------------------------------------------------------------------------------------


def _phi(x: np.ndarray) -> np.ndarray:
    """``x - (1 - exp(-x))`` without cancellation for small x (infusion AUC ramp)."""
    small = x < 1e-4
    xs = np.where(small, x, 0.0)
    return np.where(small, xs * xs * (0.5 - xs / 6.0 + xs * xs / 24.0), x + np.expm1(-x))


@dataclass(frozen=True)
class _DoseGroup:
    """Doses that share one impulse response (one agent, one route family)."""

    response: ExpSum
    start_h: np.ndarray
    duration_h: np.ndarray
    amount_umol_per_kg: np.ndarray

    def _unit_terms(self, t: np.ndarray, antiderivative: bool) -> np.ndarray:
        """Per (time, dose, exponential): response to one umol/kg, or its integral from -inf.

        Shape ``(len(t), n_doses, n_exponentials)``.
        """
        r = self.response.rates_per_h[None, None, :]
        s = t[:, None, None] - self.start_h[None, :, None]
        T = self.duration_h[None, :, None]
        infusion = T > 0.0
        T_safe = np.where(infusion, T, 1.0)
        s_in = np.clip(s, 0.0, T)  # time spent under the infusion so far
        s_out = np.maximum(s - T, 0.0)  # time since the infusion (or bolus) ended
        rise = -np.expm1(-r * s_in)  # 1 - exp(-r s_in), accurate for small r s_in
        if not antiderivative:
            bolus = np.where(s >= 0.0, np.exp(-r * s_out), 0.0)
            inf = rise * np.exp(-r * s_out) / (r * T_safe)
        else:
            bolus = -np.expm1(-r * s_out) / r
            inf = (_phi(r * s_in) + rise * -np.expm1(-r * s_out)) / (r * r * T_safe)
        return np.where(infusion, inf, bolus)

    def evaluate(self, t: np.ndarray, antiderivative: bool = False) -> np.ndarray:
        """Concentration (uM), or its integral from -inf (uM*h), at times ``t`` (1-D)."""
        out = np.zeros(t.shape, dtype=float)
        n_terms = max(1, self.start_h.size * self.response.rates_per_h.size)
        chunk = max(1, _CHUNK_ELEMENTS // n_terms)
        weights = self.amount_umol_per_kg[:, None] * self.response.coefs[None, :]
        for i in range(0, t.size, chunk):
            terms = self._unit_terms(t[i : i + chunk], antiderivative)
            out[i : i + chunk] = np.einsum("nmk,mk->n", terms, weights)
        return out

    def upper_bound(self, t0: float, t1: float) -> tuple[bool, float]:
        """(input running in [t0, t1], upper bound of C on [t0, t1] from the other doses).

        After its input has ended each term ``w exp(-r (t - t_end))`` is monotone, so its
        maximum over the window is at an end; the sum of those maxima bounds the sum.
        """
        given = self.amount_umol_per_kg > 0.0
        running = given & (self.start_h <= t1) & (self.start_h + self.duration_h >= t0)
        if running.any():
            return True, np.inf
        past = given & (self.start_h + self.duration_h < t0)
        if not past.any():
            return False, 0.0
        sub = _DoseGroup(self.response, self.start_h[past], self.duration_h[past], self.amount_umol_per_kg[past])
        terms = sub._unit_terms(np.array([t0, t1]), antiderivative=False)
        weighted = terms * (sub.amount_umol_per_kg[:, None] * sub.response.coefs[None, :])[None]
        return False, float(np.maximum(weighted[0], weighted[1]).sum())


def _as_times(t_hours: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(t_hours, dtype=float)
    return arr.reshape(-1), arr.ndim == 0


def _shaped(values: np.ndarray, t_hours: Any, scalar: bool) -> Any:
    return float(values[0]) if scalar else values.reshape(np.shape(t_hours))


# --------------------------------------------------------------------------------------------
# Effects
# --------------------------------------------------------------------------------------------


def hill_fraction(c_uM: Any, ec50_uM: float, hill: float) -> Any:
    """Sigmoid Emax fraction ``C^n / (EC50^n + C^n)`` in [0, 1]; negative C (rounding) -> 0."""
    c = np.maximum(np.asarray(c_uM, dtype=float), 0.0)
    with np.errstate(divide="ignore", over="ignore"):
        # Written as 1 / (1 + (EC50/C)^n): no overflow for large C, exact 0 at C = 0.
        frac = np.where(c > 0.0, 1.0 / (1.0 + (ec50_uM / np.where(c > 0.0, c, 1.0)) ** hill), 0.0)
    return float(frac) if np.ndim(frac) == 0 else frac


def cxcr4_occupancy(c_uM: Any, effect: PlerixaforEffect | None = None) -> Any:
    """Fraction of CXCR4 occupied by plerixafor, ``f = C / (C + Kd)`` in [0, 1).

    Parameters
    ----------
    c_uM : float or array
        Plerixafor effect-site concentration (uM); negative values (rounding) count as 0.
    effect : PlerixaforEffect, optional
        ``[therapy.plerixafor_effect]`` (its ``cxcr4_kd_uM``); defaults when omitted.

    Returns
    -------
    float or array
        Exactly 0 without drug.
    """
    e = effect or PlerixaforEffect()
    c = np.maximum(np.asarray(c_uM, dtype=float), 0.0)
    f = c / (c + e.cxcr4_kd_uM)
    return float(f) if np.ndim(f) == 0 else f


def release_multiplier_from_occupancy(f: Any, effect: PlerixaforEffect | None = None) -> Any:
    """Factor on the niche-release rate of lodged stem cells from the CXCR4 occupancy ``f``, >= 1.

    ``1 + (max - 1) r^n / ((EC50/Kd)^n + r^n)`` with the occupancy odds ``r = f / (1 - f)``
    (``= C / Kd``): release needs most receptors blocked when ``EC50 >> Kd`` (a steep,
    saturating transduction of occupancy). ``f = 0`` gives exactly 1, ``f -> 1`` the maximum.
    """
    e = effect or PlerixaforEffect()
    f = np.clip(np.asarray(f, dtype=float), 0.0, 1.0)
    with np.errstate(divide="ignore"):
        odds = np.where(f < 1.0, f / np.where(f < 1.0, 1.0 - f, 1.0), np.inf)
    frac = np.where(np.isinf(odds), 1.0, hill_fraction(np.where(np.isinf(odds), 0.0, odds), e.ec50_uM / e.cxcr4_kd_uM,
                                                     e.hill))
    m = 1.0 + (e.max_release_multiplier - 1.0) * frac
    return float(m) if np.ndim(m) == 0 else m


def plerixafor_release_multiplier(c_uM: Any, effect: PlerixaforEffect | None = None) -> Any:
    """Factor on the niche-release (egress) rate of lodged stem cells, >= 1.

    Parameters
    ----------
    c_uM : float or array
        Plerixafor **effect-site** concentration (uM), from
        :meth:`PlasmaPK.effect_concentration_uM` (equal to plasma when the config has no
        effect delay).
    effect : PlerixaforEffect, optional
        ``[therapy.plerixafor_effect]``; defaults when omitted.

    Returns
    -------
    float or array
        ``1 + (max - 1) * C^n / (EC50^n + C^n)``, computed through the CXCR4 occupancy
        (:func:`release_multiplier_from_occupancy`): 1 without drug, ``max_release_multiplier``
        (10) at saturation.
    """
    return release_multiplier_from_occupancy(cxcr4_occupancy(c_uM, effect), effect)


def deferoxamine_protection(c_uM: Any, effect: DeferoxamineEffect | None = None) -> Any:
    """Fraction of the endosteal vessel-loss rate removed by deferoxamine, in [0, max].

    Parameters
    ----------
    c_uM : float or array
        Deferoxamine effect-site concentration (uM) (plasma by default config).
    effect : DeferoxamineEffect, optional
        ``[therapy.deferoxamine_effect]``; defaults when omitted.

    Returns
    -------
    float or array
        ``p = max * C^n / (EC50^n + C^n)``; the vessel-loss rate is multiplied by ``1 - p``.
    """
    e = effect or DeferoxamineEffect()
    return e.max_protection_fraction * hill_fraction(c_uM, e.ec50_uM, e.hill)


# --------------------------------------------------------------------------------------------
# The plasma model of a schedule
# --------------------------------------------------------------------------------------------


class PlasmaPK:
    """Plasma concentrations of every agent in a therapy schedule (closed form, stateless).

    Parameters
    ----------
    therapy : TherapyConfig
        The ``[therapy]`` section. It is copied: later edits to the config do not reach an
        existing PlasmaPK.

    Notes
    -----
    Concentration is a pure function of time, so PlasmaPK holds no prognostic state and needs
    nothing in a checkpoint. Times are hours from the start of the run (day ``d`` of the
    schedule is ``24 d`` h). A bolus is counted from its own instant (right-continuous).

    Examples
    --------
    >>> from marrow3d.config.therapy import TherapyConfig
    >>> cfg = TherapyConfig.model_validate({"events": [{"agent": "cytarabine", "kind": "infusion",
    ...     "start_day": 0, "duration_days": 7, "dose_mg_per_m2_per_day": 200}]})
    >>> round(PlasmaPK(cfg).concentration_uM("cytarabine", 6 * 24.0), 3)
    0.3
    """

    def __init__(self, therapy: TherapyConfig) -> None:
        self.therapy = therapy.model_copy(deep=True)
        kg_per_m2 = self.therapy.body_weight_per_surface_kg_per_m2
        self._plasma: dict[str, list[_DoseGroup]] = {}
        self._effect: dict[str, list[_DoseGroup]] = {}
        delays = {
            "plerixafor": self.therapy.plerixafor_effect.effect_delay_half_life_h,
            "deferoxamine": self.therapy.deferoxamine_effect.effect_delay_half_life_h,
        }
        for agent in AGENTS:
            pk = self.therapy.agents[agent]
            doses = self.therapy.administrations(agent)
            iv = iv_bolus_response(pk, kg_per_m2)
            ka = pk.absorption_rate_per_h()
            groups: list[_DoseGroup] = []
            for extravascular in (False, True):
                sel = [d for d in doses if (d.route != "iv") == extravascular]
                if not sel:
                    continue
                # Validation guarantees an absorption rate whenever a dose is s.c./i.m.
                resp = add_first_order_stage(iv, ka, pk.bioavailability) if extravascular else iv  # type: ignore
                groups.append(
                    _DoseGroup(
                        resp,
                        np.array([d.start_h for d in sel]),
                        np.array([d.duration_h for d in sel]),
                        # mg/kg -> umol/kg
                        np.array([d.amount_mg_per_kg for d in sel]) * 1e3 / pk.molar_mass_g_per_mol,
                    )
                )
            self._plasma[agent] = groups
            delay = delays.get(agent)
            if delay is not None:
                ke0 = np.log(2.0) / delay
                self._effect[agent] = [
                    _DoseGroup(add_first_order_stage(g.response, ke0), g.start_h, g.duration_h, g.amount_umol_per_kg)
                    for g in groups
                ]
            else:
                self._effect[agent] = groups

    def __repr__(self) -> str:
        used = [a for a in AGENTS if self.therapy.uses(a)]
        return f"PlasmaPK(agents dosed: {', '.join(used) or 'none'})"

    # -- lookups -------------------------------------------------------------------------

    def _groups(self, agent: str, effect: bool = False) -> list[_DoseGroup]:
        if agent not in AGENTS:
            raise ConfigError(f"unknown agent {agent!r}; agents with PK: {', '.join(AGENTS)}")
        if effect and agent not in ("plerixafor", "deferoxamine"):
            raise ConfigError(f"{agent} has no effect site; its tissue level comes from the transport solve")
        return (self._effect if effect else self._plasma)[agent]

    def impulse_response(self, agent: str, route: str = "iv") -> ExpSum:
        """Plasma response of ``agent`` to 1 umol/kg by ``route`` ('iv', 'sc' or 'im')."""
        pk = self.therapy.agents[agent]
        iv = iv_bolus_response(pk, self.therapy.body_weight_per_surface_kg_per_m2)
        if route == "iv":
            return iv
        ka = pk.absorption_rate_per_h()
        if ka is None:
            raise ConfigError(f"{agent} has no absorption_half_life_h, so it has no {route} route")
        return add_first_order_stage(iv, ka, pk.bioavailability)

    # -- concentrations -----------------------------------------------------------------

    def concentration_uM(self, agent: str, t_hours: Any) -> Any:
        """Plasma concentration of ``agent`` (uM) at ``t_hours`` (scalar or array).

        Zero for an agent the schedule never gives. Returns a float for a scalar time and an
        array shaped like ``t_hours`` otherwise.
        """
        t, scalar = _as_times(t_hours)
        total = np.zeros(t.shape)
        for g in self._groups(agent):
            total += g.evaluate(t)
        return _shaped(total, t_hours, scalar)

    def effect_concentration_uM(self, agent: str, t_hours: Any) -> Any:
        """Effect-site concentration (uM) of plerixafor or deferoxamine at ``t_hours``.

        ``Ce' = ke0 (C - Ce)`` with ``ke0 = ln 2 / effect_delay_half_life_h`` from the agent's
        effect section; equal to the plasma concentration when that delay is None.
        """
        t, scalar = _as_times(t_hours)
        total = np.zeros(t.shape)
        for g in self._groups(agent, effect=True):
            total += g.evaluate(t)
        return _shaped(total, t_hours, scalar)

    def exposure_auc(self, agent: str, t0_h: Any, t1_h: Any) -> Any:
        """Exact plasma AUC of ``agent`` from ``t0_h`` to ``t1_h`` (uM*h); negative if t1 < t0.

        Broadcasts ``t0_h`` and ``t1_h`` against each other.
        """
        a, b = np.broadcast_arrays(np.asarray(t0_h, dtype=float), np.asarray(t1_h, dtype=float))
        scalar = a.ndim == 0
        ta, tb = a.reshape(-1), b.reshape(-1)
        total = np.zeros(ta.shape)
        for g in self._groups(agent):
            total += g.evaluate(tb, antiderivative=True) - g.evaluate(ta, antiderivative=True)
        return float(total[0]) if scalar else total.reshape(a.shape)

    # -- presence (skip a zero drug field) -----------------------------------------------

    def _threshold(self, threshold_uM: float | None) -> float:
        return self.therapy.presence_threshold_uM if threshold_uM is None else float(threshold_uM)

    def active_agents(self, t_hours: float, threshold_uM: float | None = None) -> tuple[str, ...]:
        """Agents whose plasma concentration at ``t_hours`` exceeds the threshold (uM).

        ``threshold_uM`` defaults to ``therapy.presence_threshold_uM``.
        """
        thr = self._threshold(threshold_uM)
        return tuple(a for a in AGENTS if self._plasma[a] and self.concentration_uM(a, float(t_hours)) > thr)

    def is_present(self, agent: str, t0_h: float, t1_h: float, threshold_uM: float | None = None) -> bool:
        """Whether plasma ``agent`` may exceed the threshold anywhere in ``[t0_h, t1_h]``.

        Conservative: it never answers False while the concentration is above the threshold
        (a dose running in the window counts as present; otherwise an upper bound of the
        decaying curves is compared, refined by bisection). False means the tissue field can
        be set to zero and its solve skipped.
        """
        groups = self._groups(agent)
        if not groups:
            return False
        thr = self._threshold(threshold_uM)
        lo, hi = (float(t0_h), float(t1_h)) if t0_h <= t1_h else (float(t1_h), float(t0_h))
        return self._may_exceed(groups, lo, hi, thr, _PRESENCE_DEPTH)

    def _may_exceed(self, groups: list[_DoseGroup], t0: float, t1: float, thr: float, depth: int) -> bool:
        bound = 0.0
        for g in groups:
            running, b = g.upper_bound(t0, t1)
            if running:
                return True
            bound += b
        if bound <= thr:
            return False
        ends = np.array([t0, t1])
        if max(sum(g.evaluate(ends)[i] for g in groups) for i in (0, 1)) > thr:
            return True
        if depth == 0:
            return True  # still cannot rule it out: say present
        mid = 0.5 * (t0 + t1)
        return self._may_exceed(groups, t0, mid, thr, depth - 1) or self._may_exceed(groups, mid, t1, thr, depth - 1)

    # -- effects in time ------------------------------------------------------------------

    def cxcr4_occupancy(self, t_hours: Any) -> Any:
        """CXCR4 occupancy by plerixafor at ``t_hours`` (0 without plerixafor).

        The one antagonist term: niche release (:meth:`niche_release_multiplier`) and the
        chemotactic sensitivity (x ``1 - f``) both derive from it.
        """
        c = self.effect_concentration_uM("plerixafor", t_hours)
        return cxcr4_occupancy(c, self.therapy.plerixafor_effect)

    def niche_release_multiplier(self, t_hours: Any) -> Any:
        """Plerixafor factor on stem-cell niche release at ``t_hours`` (1 without plerixafor)."""
        return release_multiplier_from_occupancy(self.cxcr4_occupancy(t_hours), self.therapy.plerixafor_effect)

    def vessel_loss_protection(self, t_hours: Any) -> Any:
        """Deferoxamine fraction of vessel-loss rate removed at ``t_hours`` (0 without DFO)."""
        c = self.effect_concentration_uM("deferoxamine", t_hours)
        return deferoxamine_protection(c, self.therapy.deferoxamine_effect)
