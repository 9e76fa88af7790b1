"""Shared base for every configuration section.

Conventions (apply to every section module in this package):

* one pydantic v2 model per concept, ``extra="forbid"`` so a typo is an error naming the key;
* units are part of the field name (``diffusivity_um2_per_min``, ``rate_per_day``);
* every field has a default and a ``description`` (shown by ``marrow3d config show``);
* physically impossible values are refused with ``Field`` bounds or validators;
* every float must be finite: ``inf`` and ``nan`` (both valid TOML) are refused in every key,
  so no bound has to remember them (a NaN compares false with every bound).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """Base class of all config sections: strict keys, validated assignment."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
    )
