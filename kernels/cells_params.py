"""Parameter table of the cell kernels: names, units and packing into arrays (pure numpy).

The kernels read their rates from two small Taichi fields, so changing a rate never recompiles
a kernel. This module is the contract between the configuration (``marrow3d.config.cells``,
which produces a mapping in kernel units: hours, mmHg, uM) and the kernels: ``pack_params``
refuses a missing or unknown name, so the two sides cannot drift apart silently.

Per-type parameters are given as ``{"hsc": x, "progenitor": x, "lsc": x, "blast": x}``;
the empty type (code 0) always gets 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .codes import BLAST, CELL_NAMES, EMPTY, HSC, LSC, N_CELL_TYPES, PROGENITOR

__all__ = [
    "TYPE_PARAMS",
    "SCALAR_PARAMS",
    "TP",
    "SP",
    "CELL_TYPE_KEYS",
    "pack_params",
]

#: Cell types that take per-type parameters, by config key.
CELL_TYPE_KEYS = {CELL_NAMES[c]: c for c in (HSC, PROGENITOR, LSC, BLAST)}

#: Per-type parameters: name -> meaning (units in the name).
TYPE_PARAMS = {
    "death_rate_per_hour": "base death rate (all causes but hypoxia and drugs)",
    "division_rate_per_hour": "division rate of a free cell at normoxia",
    "hypoxia_division_sensitivity": "fractional slow-down of division at full HIF response h=1",
    "severe_hypoxia_death_rate_per_hour": "extra death rate below the severe-hypoxia threshold",
    "lodged_division_multiplier": "division-rate multiplier of a lodged (niche-bound) cell",
}

#: Scalar parameters: name -> meaning (units in the name).
SCALAR_PARAMS = {
    "hif_p50_mmHg": "pO2 of half-maximal HIF response h(P) = 1/(1+(P/P50)^n)",
    "hif_hill": "Hill exponent n of the HIF response",
    "severe_hypoxia_threshold_mmHg": "pO2 below which the severe-hypoxia death rate applies",
    "s_phase_hours": "S-phase duration Ts: S fraction f_S = min(1, r_div * Ts)",
    "cycle_hours": "active cycle time Tc: cycling fraction f_c = min(1, r_div * Tc)",
    "cytarabine_kmax_per_hour": "maximal cytarabine kill rate of S-phase cells",
    "cytarabine_ec50_uM": "cytarabine concentration of half-maximal kill",
    "cytarabine_division_arrest": "largest fraction of divisions blocked by cytarabine (S-phase arrest), x C/(EC50+C)",
    "daunorubicin_kmax_per_hour": "maximal daunorubicin kill rate of cycling cells",
    "daunorubicin_ec50_uM": "daunorubicin concentration of half-maximal kill",
    "lodged_drug_protection": "fraction of the drug kill rate removed for lodged cells",
    "hsc_self_renewal_probability": "P(HSC daughter is an HSC) when a free niche slot is adjacent",
    "lsc_self_renewal_probability": "P(LSC daughter is an LSC)",
    "lsc_free_self_renewal_factor": "multiplier of lsc_self_renewal_probability for a free (unlodged) LSC",
    "lsc_free_differentiation_probability": "P(a free LSC whose daughter is a blast becomes a blast too)",
    "lsc_displacement_probability": "P(an LSC daughter with no free slot takes an HSC's slot)",
    "progenitor_displacement_probability": "P(a crowded leukemic daughter displaces a progenitor)",
    "progenitor_max_generation": "generation at which a progenitor stops dividing (mature)",
    "mature_exit_rate_per_hour": "exit rate of mature progenitors next to a sinusoid",
    "mature_exit_far_factor": "multiplier of that rate for mature progenitors not next to one",
    "niche_release_rate_per_hour": "release (egress) rate of lodged stem cells, before multipliers",
    "readhesion_rate_per_hour": "rate at which a released stem cell may lodge again",
    "stem_walk_rate_per_hour": "random-walk hop rate of free stem cells",
    "blast_walk_rate_per_hour": "random-walk hop rate of blasts",
    "blast_egress_rate_per_hour": "egress rate to blood of blasts next to a sinusoid",
    "blast_maturation_enabled": "1: blasts have a finite number of divisions, 0: unlimited",
    "blast_max_generation": "generation at which a blast stops dividing (post-mitotic), when enabled",
    "postmitotic_blast_death_rate_per_hour": "extra death rate of a post-mitotic blast",
    "niche_conditioning_enabled": "1: leukemia-conditioned niche slots are on, 0: off",
    "conditioning_hours": "hours a slot held by a lodged LSC takes to become conditioned",
    "deconditioning_hours": "hours without a lodged LSC after which a conditioned slot is normal again",
    "conditioned_integrity_floor": "vessel integrity down to which a conditioned slot works for LSCs",
}

TP = {name: i for i, name in enumerate(TYPE_PARAMS)}  #: per-type parameter row index
SP = {name: i for i, name in enumerate(SCALAR_PARAMS)}  #: scalar parameter index

_PROBABILITIES = (
    "hsc_self_renewal_probability",
    "lsc_self_renewal_probability",
    "lsc_free_self_renewal_factor",
    "lsc_free_differentiation_probability",
    "lsc_displacement_probability",
    "progenitor_displacement_probability",
    "lodged_drug_protection",
    "conditioned_integrity_floor",
)


def pack_params(params: Mapping[str, object]) -> tuple[np.ndarray, np.ndarray]:
    """Validate a kernel-unit parameter mapping and pack it into the kernels' arrays.

    Parameters
    ----------
    params : mapping
        Every name of :data:`TYPE_PARAMS` (each a mapping cell-type key -> value, keys
        ``hsc``, ``progenitor``, ``lsc``, ``blast``) and of :data:`SCALAR_PARAMS` (floats).

    Returns
    -------
    type_params : ndarray of float32, shape (len(TYPE_PARAMS), N_CELL_TYPES)
    scalar_params : ndarray of float32, shape (len(SCALAR_PARAMS),)

    Raises
    ------
    ValueError
        On a missing or unknown name, a missing cell type, a negative or non-finite value,
        or a probability outside [0, 1].
    """
    expected = set(TYPE_PARAMS) | set(SCALAR_PARAMS)
    missing = sorted(expected - set(params))
    unknown = sorted(set(params) - expected)
    if missing or unknown:
        raise ValueError(f"cell kernel parameters: missing {missing}, unknown {unknown}")
    tarr = np.zeros((len(TYPE_PARAMS), N_CELL_TYPES), dtype=np.float32)
    for name, row in TP.items():
        per_type = params[name]
        if not isinstance(per_type, Mapping) or set(per_type) != set(CELL_TYPE_KEYS):
            raise ValueError(
                f"{name} must map exactly {sorted(CELL_TYPE_KEYS)} to values, got {per_type!r}"
            )
        for key, code in CELL_TYPE_KEYS.items():
            tarr[row, code] = _checked(f"{name}[{key}]", per_type[key])
    tarr[:, EMPTY] = 0.0
    sarr = np.zeros(len(SCALAR_PARAMS), dtype=np.float32)
    for name, i in SP.items():
        sarr[i] = _checked(name, params[name])
    for name in _PROBABILITIES:
        if sarr[SP[name]] > 1.0:
            raise ValueError(f"{name} is a probability, got {sarr[SP[name]]}")
    sens = tarr[TP["hypoxia_division_sensitivity"]]
    if np.any(sens > 1.0):
        raise ValueError("hypoxia_division_sensitivity must be in [0, 1]")
    if sarr[SP["hif_p50_mmHg"]] <= 0.0 or sarr[SP["hif_hill"]] <= 0.0:
        raise ValueError("hif_p50_mmHg and hif_hill must be > 0")
    for flag in ("niche_conditioning_enabled", "blast_maturation_enabled"):
        if sarr[SP[flag]] not in (0.0, 1.0):
            raise ValueError(f"{flag} must be 0 or 1")
    if sarr[SP["conditioning_hours"]] <= 0.0 or sarr[SP["deconditioning_hours"]] <= 0.0:
        raise ValueError("conditioning_hours and deconditioning_hours must be > 0")
    if not 1.0 <= sarr[SP["progenitor_max_generation"]] <= 254.0:
        raise ValueError("progenitor_max_generation must be in [1, 254] (uint8 generation)")
    if not 1.0 <= sarr[SP["blast_max_generation"]] <= 255.0:
        raise ValueError("blast_max_generation must be in [1, 255] (uint8 generation)")
    return tarr, sarr


def _checked(name: str, value: object) -> float:
    v = float(value)  # type: ignore[arg-type]
    if not np.isfinite(v) or v < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return v
