"""The ``[therapy]`` section: the 7+3 TOML form, defaults, overrides and clear errors."""

from __future__ import annotations

import sys

import pytest
import tomli_w
from pydantic import ValidationError

from marrow3d.config.therapy import (
    AGENTS,
    AgentPK,
    Bolus,
    HSCTransplant,
    Infusion,
    Repeated,
    TherapyConfig,
)
from marrow3d.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEVEN_PLUS_THREE = """
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

[[therapy.events]]
agent = "hsc_transplant"
day = 28
cells = 50
"""


def parse(text: str) -> TherapyConfig:
    return TherapyConfig.model_validate(tomllib.loads(text)["therapy"])


def errors_of(data: dict) -> list[dict]:
    with pytest.raises(ValidationError) as info:
        TherapyConfig.model_validate(data)
    return info.value.errors()


def one_event(**event) -> dict:
    return {"events": [event]}


def test_seven_plus_three_toml():
    cfg = parse(SEVEN_PLUS_THREE)
    cyt, dau, tx = cfg.events
    assert isinstance(cyt, Infusion) and isinstance(dau, Bolus) and isinstance(tx, HSCTransplant)
    doses = cfg.administrations()
    assert [(d.agent, d.start_h, d.duration_h) for d in doses] == [
        ("cytarabine", 336.0, 168.0),
        ("daunorubicin", 336.0, 0.0),
        ("daunorubicin", 360.0, 0.0),
        ("daunorubicin", 384.0, 0.0),
    ]
    # 100 mg/m^2/day for 7 days = 700 mg/m^2 = 700/37 mg/kg; each dauno dose 60/37 mg/kg
    assert doses[0].amount_mg_per_kg == pytest.approx(700.0 / 37.0)
    assert doses[1].amount_mg_per_kg == pytest.approx(60.0 / 37.0)
    assert cfg.uses("cytarabine") and cfg.uses("daunorubicin") and cfg.uses("hsc_transplant")
    assert not cfg.uses("plerixafor") and not cfg.uses("deferoxamine")
    assert cfg.transplants() == [tx]
    assert cfg.transplanted_cells_between(27 * 24.0, 28 * 24.0) == 0
    assert cfg.transplanted_cells_between(28 * 24.0, 28 * 24.0 + 1.0) == 50


def test_defaults():
    cfg = TherapyConfig()
    assert cfg.events == [] and not any(cfg.uses(a) for a in AGENTS)
    assert [name for name, _ in cfg.agents.items()] == list(AGENTS)
    for name in AGENTS:
        assert isinstance(cfg.agents[name], AgentPK)
    assert cfg.agents["cytarabine"].model == "two_compartment"
    assert cfg.agents["plerixafor"].default_route == "sc"
    assert cfg.agents["daunorubicin"].absorption_half_life_h is None  # IV only


def test_other_event_kinds():
    cfg = parse(
        """
[[therapy.events]]
agent = "plerixafor"
kind = "repeated"
start_day = 14
interval_h = 24
count = 5
dose_mg_per_kg = 0.24

[[therapy.events]]
agent = "deferoxamine"
kind = "infusion"
start_day = 10
duration_h = 10
dose_mg_per_kg = 40
route = "iv"

[[therapy.events]]
agent = "cytarabine"
kind = "repeated"
start_day = 30
interval_h = 12
count = 6
infusion_duration_h = 3
dose_mg_per_m2 = 3000
"""
    )
    assert isinstance(cfg.events[0], Repeated)
    pler = cfg.administrations("plerixafor")
    assert [d.start_h for d in pler] == [336.0 + 24.0 * i for i in range(5)]
    assert {d.route for d in pler} == {"sc"}  # the agent's default route
    dfo = cfg.administrations("deferoxamine")
    assert (dfo[0].duration_h, dfo[0].amount_mg_per_kg, dfo[0].route) == (10.0, 40.0, "iv")
    hidac = cfg.administrations("cytarabine")
    assert len(hidac) == 6 and hidac[1].start_h - hidac[0].start_h == 12.0 and hidac[0].duration_h == 3.0


def test_dose_units_are_equivalent():
    per_m2 = TherapyConfig.model_validate(one_event(agent="cytarabine", kind="bolus", day=1, dose_mg_per_m2=37.0))
    per_kg = TherapyConfig.model_validate(one_event(agent="cytarabine", kind="bolus", day=1, dose_mg_per_kg=1.0))
    assert per_m2.administrations() == per_kg.administrations()
    rate = TherapyConfig.model_validate(
        one_event(agent="cytarabine", kind="infusion", start_day=0, duration_days=2, dose_mg_per_m2_per_day=100)
    )
    total = TherapyConfig.model_validate(
        one_event(agent="cytarabine", kind="infusion", start_day=0, duration_h=48, dose_mg_per_m2=200)
    )
    assert rate.administrations() == total.administrations()


def test_partial_agent_override_keeps_other_defaults():
    cfg = parse(SEVEN_PLUS_THREE + '\n[therapy.agents.cytarabine]\nhalf_life_beta_h = 2.5\n')
    cyt = cfg.agents["cytarabine"]
    assert cyt.half_life_beta_h == 2.5
    assert cyt.half_life_alpha_h == 0.2 and cyt.clearance_L_per_h_per_m2 == 114.2
    # switching the model drops the default half-lives; a new scale replaces the old one
    cfg = TherapyConfig.model_validate(
        {"agents": {"cytarabine": {"model": "one_compartment", "half_life_h": 2.0, "volume_L_per_kg": 1.0}}}
    )
    cyt = cfg.agents["cytarabine"]
    assert (cyt.half_life_alpha_h, cyt.clearance_L_per_h_per_m2, cyt.volume_L_per_kg) == (None, None, 1.0)


def test_round_trips_through_toml():
    cfg = parse(SEVEN_PLUS_THREE + '\n[therapy.agents.plerixafor]\nhalf_life_h = 3.0\n')
    text = tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))
    again = TherapyConfig.model_validate(tomllib.loads(text))
    assert again == cfg


# --------------------------------------------------------------------------------------------
# Malformed configs: each error names the key
# --------------------------------------------------------------------------------------------


def test_unknown_agent_names_the_allowed_ones():
    (err,) = errors_of(one_event(agent="cytarabin", kind="bolus", day=1, dose_mg_per_m2=10))
    assert err["loc"] == ("events", 0, "bolus", "agent")
    for name in (*AGENTS, "hsc_transplant"):
        assert name in err["msg"]
    (err,) = errors_of({"agents": {"idarubicin": {"half_life_h": 3.0}}})
    assert err["loc"] == ("agents", "idarubicin") and err["type"] == "extra_forbidden"
    with pytest.raises(ConfigError, match="cytarabine"):
        TherapyConfig().uses("idarubicin")


@pytest.mark.parametrize(
    "event, loc",
    [
        (dict(agent="cytarabine", kind="bolus", day=1, dose_mg_per_m2=-60), ("events", 0, "bolus", "dose_mg_per_m2")),
        (dict(agent="cytarabine", kind="infusion", start_day=0, duration_days=-7, dose_mg_per_m2_per_day=100),
         ("events", 0, "infusion", "duration_days")),
        (dict(agent="cytarabine", kind="infusion", start_day=-1, duration_days=7, dose_mg_per_m2_per_day=100),
         ("events", 0, "infusion", "start_day")),
        (dict(agent="plerixafor", kind="repeated", start_day=0, interval_h=0, count=3, dose_mg_per_kg=0.24),
         ("events", 0, "repeated", "interval_h")),
        (dict(agent="hsc_transplant", day=21, cells=-5), ("events", 0, "transplant", "cells")),
        (dict(agent="cytarabine", kind="bolus", day=1, dose_mg_per_m2=10, route="oral"),
         ("events", 0, "bolus", "route")),
    ],
)
def test_out_of_range_values(event, loc):
    errs = errors_of({"events": [event]})
    assert loc in [e["loc"] for e in errs]


def test_typo_key_is_named():
    errs = errors_of(one_event(agent="cytarabine", kind="infusion", start_day=0, duration_days=7,
                               dose_mg_per_m2_per_day=100, dose_mg_per_m2_per_dya=100))
    assert [(e["loc"], e["type"]) for e in errs] == [
        (("events", 0, "infusion", "dose_mg_per_m2_per_dya"), "extra_forbidden")
    ]
    (err,) = errors_of({"agents": {"cytarabine": {"half_life_beta": 2.0}}})
    assert err["loc"] == ("agents", "cytarabine", "half_life_beta")


def test_missing_dose_names_the_dose_keys():
    (err,) = errors_of(one_event(agent="daunorubicin", kind="bolus", days=[14, 15, 16]))
    assert err["loc"] == ("events", 0, "bolus")
    assert "dose_mg_per_m2" in err["msg"] and "dose_mg_per_kg" in err["msg"]
    (err,) = errors_of(one_event(agent="daunorubicin", kind="bolus", days=[1], dose_mg_per_m2=1, dose_mg_per_kg=1))
    assert "only one" in err["msg"]
    (err,) = errors_of(one_event(agent="cytarabine", kind="infusion", start_day=0, dose_mg_per_m2_per_day=1))
    assert "duration_days" in err["msg"] and "duration_h" in err["msg"]


def test_bad_or_missing_kind_is_named():
    (err,) = errors_of(one_event(agent="cytarabine", kind="infusoin", start_day=0, duration_days=7,
                                 dose_mg_per_m2_per_day=100))
    assert err["loc"] == ("events",)
    assert "events[0].kind = 'infusoin'" in err["msg"] and "infusion" in err["msg"]
    (err,) = errors_of(one_event(agent="cytarabine", day=1, dose_mg_per_m2=1))
    assert "no kind" in err["msg"]


@pytest.mark.parametrize(
    "data, words",
    [
        (one_event(agent="daunorubicin", kind="bolus", days=[14, 14, 15], dose_mg_per_m2=60), ["twice"]),
        (one_event(agent="daunorubicin", kind="bolus", day=1, days=[2], dose_mg_per_m2=60), ["only one", "day"]),
        (one_event(agent="daunorubicin", kind="bolus", day=1, dose_mg_per_m2=60, route="sc"),
         ["events[0]", "absorption_half_life_h"]),
        (one_event(agent="deferoxamine", kind="repeated", start_day=0, interval_h=8, count=3, dose_mg_per_kg=20,
                   infusion_duration_h=10), ["overlap"]),
        ({"events": [
            dict(agent="cytarabine", kind="infusion", start_day=0, duration_days=7, dose_mg_per_m2_per_day=100),
            dict(agent="cytarabine", kind="infusion", start_day=6, duration_days=7, dose_mg_per_m2_per_day=100)]},
         ["events[0] and events[1]", "overlap"]),
        ({"agents": {"cytarabine": {"half_life_h": 2.0}}}, ["half_life_h", "one_compartment"]),
        ({"agents": {"cytarabine": {"half_life_alpha_h": 3.0}}}, ["shorter"]),
        ({"agents": {"cytarabine": {"volume_L_per_kg": 1.0, "clearance_L_per_h_per_kg": 2.0}}}, ["only one"]),
        ({"agents": {"plerixafor": {"model": "two_compartment", "half_life_beta_h": 4.0}}},
         ["half_life_alpha_h", "fraction_alpha"]),
    ],
)
def test_nonsense_is_refused_with_reason(data, words):
    errs = errors_of(data)
    text = " ".join(e["msg"] for e in errs)
    for w in words:
        assert w in text


def test_back_to_back_and_bolus_on_infusion_are_allowed():
    cfg = TherapyConfig.model_validate({"events": [
        dict(agent="cytarabine", kind="infusion", start_day=0, duration_days=3, dose_mg_per_m2_per_day=100),
        dict(agent="cytarabine", kind="infusion", start_day=3, duration_days=4, dose_mg_per_m2_per_day=200),
        dict(agent="cytarabine", kind="bolus", day=1, dose_mg_per_m2=50),
    ]})
    assert len(cfg.administrations("cytarabine")) == 3


def test_zero_dose_counts_as_unused():
    cfg = TherapyConfig.model_validate(one_event(agent="plerixafor", kind="bolus", day=1, dose_mg_per_kg=0.0))
    assert not cfg.uses("plerixafor")
