"""``[vessels]``: remodeling of vessel integrity by the leukemic signal (Duarte 2018).

Per cell step, with S the remodeling signal (su, ``[transport.signal]``) sensed by a vessel
voxel and K = ``signal_half_saturation_su``:

* arterioles lose integrity at ``arteriole_loss_rate_per_day x S/(S+K) x (1 - p_DFO)``;
* sinusoids (and the central sinus) lose it at ``sinusoid_loss_rate_per_day x S/(S+K)`` but
  never below ``sinusoid_min_integrity``: they survive and leak more (transport reads
  permeability from integrity, ``[transport.exchange]``);
* where S < ``regeneration_signal_threshold_su`` integrity recovers as
  dI/dt = ``regeneration_rate_per_day`` x (1 - I);
* below ``integrity_floor`` a vessel stops exchanging and its niche slots stop working.

``p_DFO`` is the deferoxamine protection fraction from ``[therapy.deferoxamine]``. The loss
rates are free parameters: Duarte 2018 shows progressive endosteal vessel loss but no rate
(assumed: about 50% loss over 2-3 weeks of high burden).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section

__all__ = ["VesselsConfig"]

_HOURS_PER_DAY = 24.0


class VesselsConfig(Section):
    """``[vessels]``: integrity loss, regeneration and the functional floor."""

    arteriole_loss_rate_per_day: float = Field(
        0.08,
        ge=0.0,
        le=24.0,
        description="Arteriole integrity loss per day at saturating signal (a free parameter: Duarte 2018 "
        "reports progressive endosteal loss without a rate; assumed ~50% over 2-3 weeks of high burden, UNVERIFIED). Calibrated so endosteal arterioles fail before sinusoids "
        "change and the self-reinforcing stage follows takeover (tests/test_calibration.py).",
    )
    sinusoid_loss_rate_per_day: float = Field(
        0.01,
        ge=0.0,
        le=24.0,
        description="Sinusoid integrity loss per day at saturating signal (leak rise; Passaro 2017 qualitative; assumption).",
    )
    sinusoid_min_integrity: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Lowest sinusoid integrity: central vessels are spared (Duarte 2018) and only leak (assumption).",
    )
    signal_half_saturation_su: float = Field(
        1.0, gt=0.0, description="Signal K of half-maximal loss, in signal units (assumption; calibrate with secretion)."
    )
    regeneration_rate_per_day: float = Field(
        0.02, ge=0.0, le=24.0, description="Integrity recovery rate when the signal is low (slow; assumption)."
    )
    regeneration_signal_threshold_su: float = Field(
        0.1, ge=0.0, description="Signal under which vessels regenerate (assumption)."
    )
    integrity_floor: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Integrity below which a vessel stops exchanging and its niche slots stop working (assumption).",
    )

    @model_validator(mode="after")
    def _sinusoids_keep_working(self) -> "VesselsConfig":
        if self.sinusoid_min_integrity < self.integrity_floor:
            raise ValueError(
                "sinusoid_min_integrity must be >= integrity_floor: sinusoids are spared "
                "(they leak more but keep exchanging)"
            )
        return self

    def kernel_params(self) -> dict[str, float]:
        """Arguments of ``kernels.vessels.update_integrity`` (per hour, su)."""
        day = _HOURS_PER_DAY
        return {
            "arteriole_loss_per_hour": self.arteriole_loss_rate_per_day / day,
            "sinusoid_loss_per_hour": self.sinusoid_loss_rate_per_day / day,
            "sinusoid_min_integrity": self.sinusoid_min_integrity,
            "signal_half_saturation": self.signal_half_saturation_su,
            "regeneration_per_hour": self.regeneration_rate_per_day / day,
            "regeneration_signal_threshold": self.regeneration_signal_threshold_su,
        }
