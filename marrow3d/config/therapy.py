"""``[therapy]``: the dosing schedule and the plasma PK parameters of each agent.

A schedule is a list of ``[[therapy.events]]``. "7+3" (7 days of cytarabine by continuous
infusion, daunorubicin on the first 3 days) starting on day 14 reads::

    [[therapy.events]]
    agent = "cytarabine"
    kind = "infusion"
    start_day = 14
    duration_days = 7
    dose_mg_per_m2_per_day = 100

    [[therapy.events]]
    agent = "daunorubicin"
    kind = "bolus"
    days = [14, 15, 16]
    dose_mg_per_m2 = 60

Event kinds (units are in the key names; days count from the start of the run):

* ``infusion`` -- zero-order input from ``start_day`` for ``duration_days`` (or
  ``duration_h``); the dose is a daily rate (``dose_mg_per_m2_per_day`` /
  ``dose_mg_per_kg_per_day``) or the total over the infusion (``dose_mg_per_m2`` /
  ``dose_mg_per_kg``).
* ``bolus`` -- instantaneous doses on ``day`` or on each of ``days``.
* ``repeated`` -- ``count`` doses every ``interval_h`` hours from ``start_day``, each a bolus
  or, with ``infusion_duration_h``, a short infusion (e.g. HiDAC, or DFO 10 h infusions).
* ``agent = "hsc_transplant"`` with ``day`` and ``cells`` -- not PK: the number of donor HSCs
  that home to the marrow on that day.

Doses are per m^2 body surface or per kg body weight; the two are converted with
``body_weight_per_surface_kg_per_m2`` (the FDA "Km" factor of an adult human, 37 kg/m^2).
PK parameters live in ``[therapy.agents.<agent>]``; a table given there changes only the
keys it names (see :class:`PKAgents`). The plasma model itself is in
:mod:`marrow3d.pharmacology`.

Sources of the defaults are cited per field (drug labels, SmPCs, PK studies); values marked
*assumption* or *calibrated* are ours and are explained in the field's description.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ..errors import ConfigError
from .base import Section

__all__ = [
    "AGENTS",
    "TRANSPLANT",
    "AgentPK",
    "PKAgents",
    "Infusion",
    "Bolus",
    "Repeated",
    "HSCTransplant",
    "TherapyEvent",
    "PlerixaforEffect",
    "DeferoxamineEffect",
    "Administration",
    "TherapyConfig",
]

#: Agents with a plasma PK model (the order is the order of every per-agent table).
AGENTS: tuple[str, ...] = ("cytarabine", "daunorubicin", "plerixafor", "deferoxamine")
#: The ``agent`` of a transplant event (cells, not a drug).
TRANSPLANT = "hsc_transplant"

Route = Literal["iv", "sc", "im"]

_TWO_COMPARTMENT_KEYS = ("half_life_alpha_h", "half_life_beta_h", "fraction_alpha")
_MODEL_KEYS = ("model", "half_life_h", *_TWO_COMPARTMENT_KEYS)
_SCALE_KEYS = (
    "clearance_L_per_h_per_m2",
    "clearance_L_per_h_per_kg",
    "volume_L_per_m2",
    "volume_L_per_kg",
)


def _allowed_agents_text() -> str:
    return ", ".join(repr(a) for a in AGENTS) + f" (or {TRANSPLANT!r} with day and cells)"


def _exactly_one(obj: Section, keys: tuple[str, ...], what: str) -> str:
    """Name of the one key of ``keys`` that is set; a clear error otherwise."""
    given = [k for k in keys if getattr(obj, k) is not None]
    if len(given) != 1:
        options = ", ".join(keys)
        if not given:
            raise ValueError(f"{what}: give one of {options}")
        raise ValueError(f"{what}: give only one of {options} (got {', '.join(given)})")
    return given[0]


# --------------------------------------------------------------------------------------------
# PK parameters
# --------------------------------------------------------------------------------------------


class AgentPK(Section):
    """Linear plasma PK of one agent: one or two compartments, optional first-order absorption.

    The IV-bolus concentration per unit dose is ``C0 * exp(-k t)`` (one compartment) or
    ``C0 * (f exp(-alpha t) + (1 - f) exp(-beta t))`` (two compartments, ``f`` =
    ``fraction_alpha``). The scale ``C0`` follows from exactly one of the clearance or the
    terminal volume ``V_z = CL / lambda_z``, per m^2 or per kg. Extravascular doses (s.c.,
    i.m.) pass through a depot with first-order absorption and bioavailability ``F``.
    """

    model: Literal["one_compartment", "two_compartment"] = Field(
        "one_compartment", description="Disposition model: mono- or bi-exponential after an IV bolus."
    )
    half_life_h: float | None = Field(
        None, gt=0.0, description="Elimination half-life of a one-compartment agent (h)."
    )
    half_life_alpha_h: float | None = Field(
        None, gt=0.0, description="Distribution (fast, alpha) half-life of a two-compartment agent (h)."
    )
    half_life_beta_h: float | None = Field(
        None, gt=0.0, description="Terminal (slow, beta) half-life of a two-compartment agent (h)."
    )
    fraction_alpha: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="A/(A+B): share of the IV-bolus initial concentration in the alpha phase (two-compartment).",
    )
    clearance_L_per_h_per_m2: float | None = Field(
        None, gt=0.0, description="Total plasma clearance per m^2 body surface (L/h/m^2)."
    )
    clearance_L_per_h_per_kg: float | None = Field(
        None, gt=0.0, description="Total plasma clearance per kg body weight (L/h/kg)."
    )
    volume_L_per_m2: float | None = Field(
        None, gt=0.0, description="Terminal-phase volume V_z = CL/lambda_z per m^2 (= V for one compartment)."
    )
    volume_L_per_kg: float | None = Field(
        None, gt=0.0, description="Terminal-phase volume V_z = CL/lambda_z per kg (the label's 'Vd')."
    )
    molar_mass_g_per_mol: float = Field(
        ..., gt=0.0, description="Molar mass of the dosed form (salt if doses are of the salt), g/mol."
    )
    default_route: Route = Field(
        "iv", description="Route of events that give none: iv, or sc/im (first-order absorption)."
    )
    absorption_half_life_h: float | None = Field(
        None, gt=0.0, description="Half-life of first-order absorption from an s.c./i.m. depot (h); None: IV only."
    )
    bioavailability: float = Field(
        1.0, gt=0.0, le=1.0, description="Fraction of an s.c./i.m. dose that reaches plasma."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "AgentPK":
        if self.model == "one_compartment":
            extra = [k for k in _TWO_COMPARTMENT_KEYS if getattr(self, k) is not None]
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} apply to model = 'two_compartment'; a one-compartment agent takes half_life_h"
                )
            if self.half_life_h is None:
                raise ValueError("model = 'one_compartment' needs half_life_h")
        else:
            if self.half_life_h is not None:
                raise ValueError(
                    "half_life_h applies to model = 'one_compartment'; a two-compartment agent takes "
                    "half_life_alpha_h, half_life_beta_h and fraction_alpha"
                )
            missing = [k for k in _TWO_COMPARTMENT_KEYS if getattr(self, k) is None]
            if missing:
                raise ValueError(f"model = 'two_compartment' needs {', '.join(missing)}")
            if not self.half_life_alpha_h < self.half_life_beta_h:  # type: ignore[operator]
                raise ValueError(
                    f"half_life_alpha_h ({self.half_life_alpha_h}) must be shorter than half_life_beta_h "
                    f"({self.half_life_beta_h})"
                )
        _exactly_one(self, _SCALE_KEYS, "PK scale")
        if self.default_route != "iv" and self.absorption_half_life_h is None:
            raise ValueError(f"default_route = {self.default_route!r} needs absorption_half_life_h")
        return self

    # -- derived quantities (per kg; pharmacology.py works in umol/kg and L/kg) --------------

    def disposition(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Rate constants (1/h) and their shares of the IV-bolus initial concentration."""
        if self.model == "one_compartment":
            return (math.log(2.0) / self.half_life_h,), (1.0,)  # type: ignore[operator]
        f = self.fraction_alpha
        return (
            (math.log(2.0) / self.half_life_alpha_h, math.log(2.0) / self.half_life_beta_h),  # type: ignore[operator]
            (f, 1.0 - f),  # type: ignore[operator]
        )

    def clearance_per_kg(self, kg_per_m2: float) -> float:
        """Total clearance in L/h per kg body weight, whichever scale key was given."""
        rates, _ = self.disposition()
        lambda_z = min(rates)
        if self.clearance_L_per_h_per_kg is not None:
            return self.clearance_L_per_h_per_kg
        if self.clearance_L_per_h_per_m2 is not None:
            return self.clearance_L_per_h_per_m2 / kg_per_m2
        if self.volume_L_per_kg is not None:
            return self.volume_L_per_kg * lambda_z
        return self.volume_L_per_m2 * lambda_z / kg_per_m2  # type: ignore[operator]

    def absorption_rate_per_h(self) -> float | None:
        """First-order absorption rate constant ka (1/h), or None for an IV-only agent."""
        if self.absorption_half_life_h is None:
            return None
        return math.log(2.0) / self.absorption_half_life_h


def _cytarabine() -> AgentPK:
    return AgentPK(
        model="two_compartment",
        half_life_alpha_h=0.2,  # 12 min (Ho & Frei 1971)
        half_life_beta_h=111.0 / 60.0,  # 111 min (Ho & Frei 1971)
        # Ho & Frei 1971 give no A/B split; 0.9 makes about half of the steady-state
        # level fall with the 12-min phase after an infusion stops (assumption).
        fraction_alpha=0.9,
        # Calibrated: 200 mg/m^2/day CI -> Css 0.30 uM (Fleming 1995, measured CL 134 +- 71).
        clearance_L_per_h_per_m2=114.2,
        molar_mass_g_per_mol=243.22,
        default_route="iv",
    )


def _daunorubicin() -> AgentPK:
    return AgentPK(
        model="two_compartment",
        # 45 min initial phase (US label).
        half_life_alpha_h=0.75,
        half_life_beta_h=18.5,  # Davis drug guide; Swiss label 19 h
        # Assumption: puts ~0.9 uM at the end of a 60 mg/m^2 push, ~0.04 uM in the terminal
        # phase (no measured peak plasma concentration was found).
        fraction_alpha=0.95,
        volume_L_per_kg=39.0,  # Swiss label; renal drug handbook 39.2 L/kg
        molar_mass_g_per_mol=527.52,  # doses are stated as daunorubicin base
        default_route="iv",
    )


def _plerixafor() -> AgentPK:
    return AgentPK(
        model="one_compartment",
        half_life_h=4.0,  # terminal 3-5 h (drugs.com monograph)
        volume_L_per_kg=0.3,  # drugs.com monograph
        molar_mass_g_per_mol=502.79,
        default_route="sc",
        # Calibrated: Tmax = 45 min (label 30-60 min) with the 4 h elimination half-life.
        absorption_half_life_h=0.15,
        bioavailability=1.0,  # assumption: complete s.c. absorption
    )


def _deferoxamine() -> AgentPK:
    return AgentPK(
        model="two_compartment",
        half_life_alpha_h=1.0,  # UNVERIFIED estimate (DFO SmPC: biphasic, short; no values)
        half_life_beta_h=6.0,  # UNVERIFIED estimate (DFO SmPC: biphasic, short; no values)
        fraction_alpha=0.9,  # assumption: "short half-life", most drug leaves in the fast phase
        # Calibrated: 10 mg/kg i.m. peaks at 15.5 uM at 30 min (DFO SmPC), with the absorption
        # half-life below.
        clearance_L_per_h_per_kg=0.33,
        molar_mass_g_per_mol=656.79,  # deferoxamine mesylate, the dosed salt
        default_route="sc",
        absorption_half_life_h=0.15,  # calibrated: Tmax 30 min i.m. (DFO SmPC)
        bioavailability=1.0,  # assumption
    )


_AGENT_DEFAULTS = {
    "cytarabine": _cytarabine,
    "daunorubicin": _daunorubicin,
    "plerixafor": _plerixafor,
    "deferoxamine": _deferoxamine,
}


def _merge_agent(name: str, given: Any) -> Any:
    """Lay a partial ``[therapy.agents.<name>]`` table over that agent's defaults.

    Keys given replace the defaults; giving a different ``model`` drops the default
    half-lives, and giving any scale key drops the default scale, so a table never ends up
    with two contradictory groups.
    """
    if not isinstance(given, dict):
        return given
    default = _AGENT_DEFAULTS[name]()
    base = default.model_dump(exclude_none=True)
    if "model" in given and given["model"] != default.model:
        for k in _MODEL_KEYS:
            base.pop(k, None)
    if any(k in given for k in _SCALE_KEYS):
        for k in _SCALE_KEYS:
            base.pop(k, None)
    return {**base, **given}


class PKAgents(Section):
    """``[therapy.agents]``: the PK of each agent; a partial table keeps the other defaults.

    A fixed set of keys (not a free dict) so that an unknown agent is an error naming the
    allowed ones. Indexable like a dict: ``agents["cytarabine"]``.
    """

    cytarabine: AgentPK = Field(
        default_factory=_cytarabine,
        description=(
            "Ara-C: biphasic 12/111 min (Ho & Frei 1971); CL calibrated to Css 0.30 uM at "
            "200 mg/m^2/day (Fleming 1995)."
        ),
    )
    daunorubicin: AgentPK = Field(
        default_factory=_daunorubicin,
        description="Terminal t1/2 18.5 h, Vd 39 L/kg (labels); 45 min initial phase; A/B split assumed.",
    )
    plerixafor: AgentPK = Field(
        default_factory=_plerixafor,
        description="One compartment, t1/2 4 h, Vd 0.3 L/kg, s.c. Tmax 45 min (drugs.com monograph).",
    )
    deferoxamine: AgentPK = Field(
        default_factory=_deferoxamine,
        description=(
            "Biphasic ~1 h / ~6 h (UNVERIFIED); scale calibrated to 15.5 uM peak 30 min after "
            "10 mg/kg i.m. (SmPC)."
        ),
    )

    @field_validator(*AGENTS, mode="before")
    @classmethod
    def _fill_defaults(cls, value: Any, info: Any) -> Any:
        return _merge_agent(info.field_name, value)

    def __getitem__(self, agent: str) -> AgentPK:
        if agent not in AGENTS:
            raise ConfigError(f"unknown agent {agent!r}; agents with PK: {', '.join(AGENTS)}")
        return getattr(self, agent)

    def items(self) -> list[tuple[str, AgentPK]]:
        """``(name, AgentPK)`` pairs in :data:`AGENTS` order."""
        return [(a, getattr(self, a)) for a in AGENTS]


# --------------------------------------------------------------------------------------------
# Dosing events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Administration:
    """One dose as the PK model sees it (expanded from an event).

    Attributes
    ----------
    agent : str
    start_h : float
        Start of the dose, hours from the start of the run.
    duration_h : float
        0 for a bolus, else the length of a zero-order infusion (h).
    amount_mg_per_kg : float
        Whole dose, converted to mg per kg body weight.
    route : {'iv', 'sc', 'im'}
    event_index : int
        Position of the source event in ``therapy.events`` (for messages).
    """

    agent: str
    start_h: float
    duration_h: float
    amount_mg_per_kg: float
    route: str
    event_index: int

    @property
    def end_h(self) -> float:
        """End of the input (h); equals ``start_h`` for a bolus."""
        return self.start_h + self.duration_h


class _DoseEvent(Section):
    """Fields shared by every drug event."""

    agent: str = Field(..., description="Which drug: " + ", ".join(AGENTS) + ".")
    route: Route | None = Field(
        None, description="iv, sc or im (sc/im: first-order absorption); None: the agent's default_route."
    )

    @field_validator("agent")
    @classmethod
    def _known_agent(cls, value: str) -> str:
        if value not in AGENTS:
            raise ValueError(f"unknown agent {value!r}; allowed: {_allowed_agents_text()}")
        return value

    def _dose_mg(self, keys: tuple[str, ...]) -> tuple[str, float]:
        key = _exactly_one(self, keys, f"{self.agent} {getattr(self, 'kind')} dose")
        return key, float(getattr(self, key))


#: Dose keys of each event kind: exactly one is given (units in the name).
_INFUSION_DOSE_KEYS = ("dose_mg_per_m2_per_day", "dose_mg_per_kg_per_day", "dose_mg_per_m2", "dose_mg_per_kg")
_BOLUS_DOSE_KEYS = ("dose_mg_per_m2", "dose_mg_per_kg")


def _per_kg(key: str, value: float, kg_per_m2: float) -> float:
    """mg/m^2 -> mg/kg with the body weight per surface area; mg/kg unchanged."""
    return value / kg_per_m2 if "_per_m2" in key else value


class Infusion(_DoseEvent):
    """Zero-order (constant-rate) infusion, e.g. cytarabine 100-200 mg/m^2/day for 7 days."""

    kind: Literal["infusion"] = Field(..., description="'infusion'.")
    start_day: float = Field(..., ge=0.0, description="Start, in days from the start of the run.")
    duration_days: float | None = Field(None, gt=0.0, description="Length of the infusion (days).")
    duration_h: float | None = Field(None, gt=0.0, description="Length of the infusion (h); instead of duration_days.")
    dose_mg_per_m2_per_day: float | None = Field(None, ge=0.0, description="Rate, mg per m^2 per day.")
    dose_mg_per_kg_per_day: float | None = Field(None, ge=0.0, description="Rate, mg per kg per day.")
    dose_mg_per_m2: float | None = Field(None, ge=0.0, description="Total over the infusion, mg per m^2.")
    dose_mg_per_kg: float | None = Field(None, ge=0.0, description="Total over the infusion, mg per kg.")

    @model_validator(mode="after")
    def _one_of_each(self) -> "Infusion":
        _exactly_one(self, ("duration_days", "duration_h"), f"{self.agent} infusion length")
        self._dose_mg(_INFUSION_DOSE_KEYS)
        return self

    @property
    def length_h(self) -> float:
        """Duration of the infusion in hours."""
        return self.duration_h if self.duration_h is not None else 24.0 * self.duration_days  # type: ignore[operator]

    def administrations(self, index: int, kg_per_m2: float, route: str) -> list[Administration]:
        """The one zero-order input of this event."""
        key, value = self._dose_mg(_INFUSION_DOSE_KEYS)
        total = value * self.length_h / 24.0 if key.endswith("_per_day") else value
        return [
            Administration(
                self.agent, 24.0 * self.start_day, self.length_h, _per_kg(key, total, kg_per_m2), route, index
            )
        ]


class Bolus(_DoseEvent):
    """Instantaneous dose(s): one on ``day`` or one on each of ``days`` (e.g. days 1-3 of 7+3)."""

    kind: Literal["bolus"] = Field(..., description="'bolus'.")
    day: float | None = Field(None, ge=0.0, description="Day of a single dose (fractions allowed: 14.5 = noon).")
    days: list[Annotated[float, Field(ge=0.0)]] | None = Field(
        None, min_length=1, description="Days of the doses, one dose on each."
    )
    dose_mg_per_m2: float | None = Field(None, ge=0.0, description="Each dose, mg per m^2.")
    dose_mg_per_kg: float | None = Field(None, ge=0.0, description="Each dose, mg per kg.")

    @model_validator(mode="after")
    def _one_of_each(self) -> "Bolus":
        _exactly_one(self, ("day", "days"), f"{self.agent} bolus timing")
        if self.days is not None and len(set(self.days)) != len(self.days):
            # A repeated day doubles that dose silently; almost always a typo.
            raise ValueError(f"days {self.days} lists a day twice; give each day once")
        self._dose_mg(_BOLUS_DOSE_KEYS)
        return self

    def dose_days(self) -> list[float]:
        """The days with a dose."""
        return [self.day] if self.day is not None else list(self.days)  # type: ignore[arg-type]

    def administrations(self, index: int, kg_per_m2: float, route: str) -> list[Administration]:
        key, value = self._dose_mg(_BOLUS_DOSE_KEYS)
        amount = _per_kg(key, value, kg_per_m2)
        return [Administration(self.agent, 24.0 * d, 0.0, amount, route, index) for d in self.dose_days()]


class Repeated(_DoseEvent):
    """``count`` doses every ``interval_h`` hours, each a bolus or a short infusion."""

    kind: Literal["repeated"] = Field(..., description="'repeated'.")
    start_day: float = Field(..., ge=0.0, description="Day of the first dose.")
    interval_h: float = Field(..., gt=0.0, description="Time between dose starts (h).")
    count: int = Field(..., ge=1, le=10000, description="Number of doses.")
    infusion_duration_h: float | None = Field(
        None, gt=0.0, description="Each dose infused over this many hours; None: boluses."
    )
    dose_mg_per_m2: float | None = Field(None, ge=0.0, description="Each dose, mg per m^2.")
    dose_mg_per_kg: float | None = Field(None, ge=0.0, description="Each dose, mg per kg.")

    @model_validator(mode="after")
    def _consistent(self) -> "Repeated":
        if self.infusion_duration_h is not None and self.infusion_duration_h > self.interval_h:
            raise ValueError(
                f"infusion_duration_h ({self.infusion_duration_h}) is longer than interval_h "
                f"({self.interval_h}): the infusions would overlap"
            )
        self._dose_mg(_BOLUS_DOSE_KEYS)
        return self

    def administrations(self, index: int, kg_per_m2: float, route: str) -> list[Administration]:
        key, value = self._dose_mg(_BOLUS_DOSE_KEYS)
        amount = _per_kg(key, value, kg_per_m2)
        length = self.infusion_duration_h or 0.0
        t0 = 24.0 * self.start_day
        return [
            Administration(self.agent, t0 + i * self.interval_h, length, amount, route, index)
            for i in range(self.count)
        ]


class HSCTransplant(Section):
    """Donor HSCs that home to the marrow on ``day`` (a cell event, not PK)."""

    agent: Literal["hsc_transplant"] = Field(..., description="'hsc_transplant'.")
    kind: Literal["transplant"] = Field("transplant", description="Optional; always 'transplant'.")
    day: float = Field(..., ge=0.0, description="Day the cells arrive, from the start of the run.")
    cells: int = Field(..., ge=0, description="Number of donor HSCs that home into the simulated domain.")


def _event_tag(value: Any) -> str | None:
    """Which event model a table is: transplants by agent, drugs by kind."""
    if isinstance(value, dict):
        if value.get("agent") == TRANSPLANT:
            return "transplant"
        kind = value.get("kind")
        return kind if isinstance(kind, str) else None
    if isinstance(value, HSCTransplant):
        return "transplant"
    return getattr(value, "kind", None)


TherapyEvent = Annotated[
    Union[
        Annotated[Infusion, Tag("infusion")],
        Annotated[Bolus, Tag("bolus")],
        Annotated[Repeated, Tag("repeated")],
        Annotated[HSCTransplant, Tag("transplant")],
    ],
    Discriminator(
        _event_tag,
        custom_error_type="event_kind",
        custom_error_message=(
            "a drug event needs kind = 'infusion', 'bolus' or 'repeated' "
            "(a transplant is agent = 'hsc_transplant' with day and cells)"
        ),
    ),
]


# --------------------------------------------------------------------------------------------
# Effects of the niche-directed agents
# --------------------------------------------------------------------------------------------


class PlerixaforEffect(Section):
    """CXCR4 antagonist: one receptor occupancy drives niche release and chemotaxis.

    ``f = Ce / (Ce + Kd)`` of the effect-site concentration ``Ce``; the niche-release (egress)
    rate of lodged stem cells is multiplied by ``m = 1 + (max - 1) r^n / ((EC50/Kd)^n + r^n)``
    of the occupancy odds ``r = f / (1 - f)`` (= ``Ce / Kd``, so ``m`` equals the former
    ``1 + (max - 1) Ce^n / (EC50^n + Ce^n)``) and the chemotactic sensitivity by ``1 - f``.
    ``Ce``
    which lags plasma by a first-order link (``effect_delay_half_life_h``). Calibrated with the
    default PK so that after 0.24 mg/kg s.c. the multiplier peaks (~9x) near 3 h and is back to
    within ~2% of baseline excess by 12 h (Nervi 2009 AMD3100 kinetics).
    """

    max_release_multiplier: float = Field(
        10.0, ge=1.0, description="Release-rate multiplier at saturating concentration (~10x; Nervi 2009: circulating blasts x9)."
    )
    ec50_uM: float = Field(0.6, gt=0.0, description="Effect-site concentration of half effect (calibrated).")
    cxcr4_kd_uM: float = Field(
        0.65, gt=0.0,
        description="Plerixafor concentration of half CXCR4 occupancy, f = C / (C + Kd): the IC50 of AMD3100 "
        "against CXCL12 binding to CXCR4, 651 nM (Fricker 2006, doi:10.1016/j.bcp.2006.05.010, as recalled: "
        "UNVERIFIED; an IC50 bounds Ki from above). Release and chemotaxis both follow f (docs/model.md 2.10).",
    )
    hill: float = Field(
        5.0,
        gt=0.0,
        description="Hill coefficient; steep so the effect ends by 12 h despite the 4 h half-life (calibrated).",
    )
    effect_delay_half_life_h: float | None = Field(
        1.0,
        gt=0.0,
        description="Plasma -> effect-site equilibration half-life (h); puts the peak at ~3 h. None: no lag.",
    )


class DeferoxamineEffect(Section):
    """Vessel preservation: fraction of the endosteal vessel-loss rate removed while on drug.

    ``p(Ce) = max * Ce^n / (EC50^n + Ce^n)``; loss rate x (1 - p). Duarte 2018 is qualitative
    (DFO blocks the loss); the numbers are assumptions chosen so that a 10 h infusion of
    40 mg/kg gives ~0.77 during the infusion and ~0 a day after the course.
    """

    max_protection_fraction: float = Field(
        0.8, ge=0.0, le=1.0, description="Largest fraction of the vessel-loss rate removed (assumption: loss x0.2 on drug; Duarte 2018 qualitative)."
    )
    ec50_uM: float = Field(3.0, gt=0.0, description="Concentration of half the maximal protection (assumption).")
    hill: float = Field(2.0, gt=0.0, description="Hill coefficient (assumption).")
    effect_delay_half_life_h: float | None = Field(
        None, gt=0.0, description="Plasma -> effect-site equilibration half-life (h); None: follows plasma."
    )


# --------------------------------------------------------------------------------------------
# The section
# --------------------------------------------------------------------------------------------


class TherapyConfig(Section):
    """``[therapy]``: dosing events, PK of each agent, and the niche-agent effects."""

    events: list[TherapyEvent] = Field(
        default_factory=list, description="Dosing and transplant events ([[therapy.events]]); none by default."
    )
    agents: PKAgents = Field(default_factory=PKAgents, description="Plasma PK of each agent.")
    body_weight_per_surface_kg_per_m2: float = Field(
        37.0,
        gt=0.0,
        description="Converts mg/m^2 <-> mg/kg (FDA 2005 Km factor, adult human 60 kg / 1.62 m^2).",
    )
    presence_threshold_uM: float = Field(
        1e-4,
        gt=0.0,
        description="Plasma level below which a drug counts as absent and its tissue field is skipped.",
    )
    plerixafor_effect: PlerixaforEffect = Field(
        default_factory=PlerixaforEffect, description="Niche-release multiplier of plerixafor."
    )
    deferoxamine_effect: DeferoxamineEffect = Field(
        default_factory=DeferoxamineEffect, description="Vessel-loss protection of deferoxamine."
    )

    @field_validator("events", mode="before")
    @classmethod
    def _kinds_known(cls, value: Any) -> Any:
        # Checked here, before the tagged union, so the message can quote the bad kind.
        if not isinstance(value, list):
            return value
        kinds = ("infusion", "bolus", "repeated")
        for i, ev in enumerate(value):
            if not isinstance(ev, dict) or ev.get("agent") == TRANSPLANT:
                continue
            if "kind" not in ev:
                raise ValueError(f"events[{i}] ({ev.get('agent', '?')}) has no kind; use one of {', '.join(kinds)}")
            if ev["kind"] not in kinds:
                raise ValueError(
                    f"events[{i}].kind = {ev['kind']!r} is not one of {', '.join(kinds)} "
                    f"(a transplant is agent = {TRANSPLANT!r} with day and cells)"
                )
        return value

    @model_validator(mode="after")
    def _schedule_makes_sense(self) -> "TherapyConfig":
        for i, ev in enumerate(self.events):
            if isinstance(ev, HSCTransplant):
                continue
            route = ev.route or self.agents[ev.agent].default_route
            if route != "iv" and self.agents[ev.agent].absorption_half_life_h is None:
                raise ValueError(
                    f"events[{i}]: route {route!r} for {ev.agent} needs "
                    f"agents.{ev.agent}.absorption_half_life_h (this agent is IV-only by default)"
                )
        # Two infusions of one agent running at once are almost always a copy-paste slip
        # (the doses would add up); boluses on top of an infusion are allowed.
        for agent in AGENTS:
            runs = sorted(
                (a for a in self.administrations(agent) if a.duration_h > 0.0), key=lambda a: a.start_h
            )
            for prev, nxt in zip(runs, runs[1:]):
                if nxt.start_h < prev.end_h - 1e-9:
                    raise ValueError(
                        f"events[{prev.event_index}] and events[{nxt.event_index}]: {agent} infusions overlap "
                        f"(hours {prev.start_h:g}-{prev.end_h:g} and {nxt.start_h:g}-{nxt.end_h:g}); "
                        "merge them into one event"
                    )
        return self

    def uses(self, agent: str) -> bool:
        """Whether any event gives ``agent`` (a PK agent or ``'hsc_transplant'``) a non-zero dose."""
        if agent == TRANSPLANT:
            return any(t.cells > 0 for t in self.transplants())
        if agent not in AGENTS:
            raise ConfigError(f"unknown agent {agent!r}; allowed: {_allowed_agents_text()}")
        return any(a.amount_mg_per_kg > 0.0 for a in self.administrations(agent))

    def transplants(self) -> list[HSCTransplant]:
        """Transplant events, sorted by day."""
        return sorted((e for e in self.events if isinstance(e, HSCTransplant)), key=lambda e: e.day)

    def transplanted_cells_between(self, t0_h: float, t1_h: float) -> int:
        """Donor HSCs arriving in ``[t0_h, t1_h)`` (hours), so consecutive steps count each once."""
        return sum(t.cells for t in self.transplants() if t0_h <= 24.0 * t.day < t1_h)

    def administrations(self, agent: str | None = None) -> list[Administration]:
        """Every dose (of ``agent``, or of all agents), in mg/kg with the route resolved.

        Sorted by start time. This is what :class:`marrow3d.pharmacology.PlasmaPK` superposes.
        """
        if agent is not None and agent not in AGENTS:
            raise ConfigError(f"unknown agent {agent!r}; agents with PK: {', '.join(AGENTS)}")
        out: list[Administration] = []
        for i, ev in enumerate(self.events):
            if isinstance(ev, HSCTransplant) or (agent is not None and ev.agent != agent):
                continue
            route = ev.route or self.agents[ev.agent].default_route
            out.extend(ev.administrations(i, self.body_weight_per_surface_kg_per_m2, route))
        return sorted(out, key=lambda a: (a.start_h, a.event_index))
