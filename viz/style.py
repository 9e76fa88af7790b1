"""Colours, colour scales and labels shared by the 3D renderer and the time-series plots.

Every continuous quantity has a fixed scale in physical units so that two pictures (or two
frames of a movie) are comparable:

==============  ====================  ==================================================
field           scale                 why
==============  ====================  ==================================================
oxygen          0 - 40 mmHg           arterial-side marrow pO2 tops out near 40 mmHg
signal          log10, 1e-5 - 1 K     decades below the vessel-damage half saturation K
cxcl12          0 - 10 nM             the default source level of stroma on intact vessels
cytarabine      0 - plasma peak uM    marrow levels relative to the run's plasma peak
daunorubicin    0 - plasma peak uM    idem (``marrow3d compare``: 0 - the highest marrow level drawn)
integrity       0 - 1                 1 = intact vessel; below the floor = lost
==============  ====================  ==================================================

Categorical colours follow the Okabe-Ito palette (distinguishable with colour-vision
deficiency) for cells and niche holders; vessels keep the anatomical red/blue convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from marrow3d.kernels import codes

__all__ = [
    "FieldScale",
    "SHOW_MODES",
    "CELL_COLORS",
    "CELL_LABELS",
    "NICHE_HOLDER_COLORS",
    "STAGE_COLORS",
    "ARTERIOLE_COLOR",
    "SINUSOID_COLOR",
    "LOST_COLOR",
    "BONE_COLOR",
    "nice_ceil",
    "field_scale",
]

#: ``--show`` modes of ``marrow3d render`` / ``movie``.
SHOW_MODES = ("oxygen", "drug", "signal", "cxcl12", "cells", "niches", "vessels", "integrity")
#: Extra ``--show`` names accepted as aliases (a drug by name).
SHOW_ALIASES = {"cytarabine": "drug", "daunorubicin": "drug", "o2": "oxygen", "pO2": "oxygen"}

# Okabe-Ito
CELL_COLORS = {
    codes.HSC: "#009E73",  # bluish green
    codes.PROGENITOR: "#56B4E9",  # sky blue
    codes.LSC: "#D55E00",  # vermillion
    codes.BLAST: "#CC79A7",  # reddish purple
}
CELL_LABELS = {codes.HSC: "HSC", codes.PROGENITOR: "progenitor", codes.LSC: "LSC", codes.BLAST: "blast"}

#: Who holds a niche slot (``marrow3d render --show niches``).
NICHE_HOLDER_COLORS = {
    "HSC": "#009E73",
    "LSC": "#D55E00",
    "other cell": "#999999",
    "empty": "#F0E442",  # yellow: free slot
}

ARTERIOLE_COLOR = "#B2182B"
SINUSOID_COLOR = "#2166AC"
LOST_COLOR = "#505050"
BONE_COLOR = "#D9C7A0"
BACKGROUND = "white"
TEXT_COLOR = "#202020"

#: Disease-stage shading (0 pre-leukemic, 1 permissive, 2 self-reinforcing).
STAGE_COLORS = {0: "#FFFFFF", 1: "#FDD9A0", 2: "#F4A3A3"}


@dataclass(frozen=True)
class FieldScale:
    """How one continuous quantity is coloured.

    ``transform`` is ``"linear"`` or ``"log10"``; with ``log10`` the rendered values are
    ``log10(max(v, 10**clim[0]))`` and ``clim`` is in decades.
    """

    name: str  #: array name in the run
    title: str  #: colour-bar title, with units
    clim: tuple[float, float]
    cmap: str
    transform: str = "linear"
    #: volume opacity transfer function over ``clim`` (evenly spaced values)
    opacity: tuple[float, ...] = (0.0, 1.0)

    @property
    def clear_value(self) -> float:
        """A value drawn fully transparent in volumes (used for bone and outside voxels)."""
        return self.clim[1] if self.opacity[-1] <= self.opacity[0] else self.clim[0]


#: Mantissas of :func:`nice_ceil` with ``fine=True``: a colour-bar end within 25% of the data.
FINE_MANTISSAS = (1.0, 1.2, 1.5, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0)


def nice_ceil(x: float, fine: bool = False) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^n that is >= ``x`` (``x > 0``).

    ``fine=True`` rounds up to :data:`FINE_MANTISSAS` instead (1, 1.2, 1.5, 1.8, 2, 2.5, 3, 3.5,
    4, 5, 6, 7, 8 x 10^n): the result is at most 1.25 x ``x``, so data fill at least 80% of a scale.
    """
    if not math.isfinite(x) or x <= 0:
        return 1.0
    e = math.floor(math.log10(x))
    for m in (FINE_MANTISSAS if fine else (1.0, 2.0, 2.5, 5.0, 10.0)):
        v = m * 10.0**e
        if v >= x * (1 - 1e-9):
            return float(f"{v:.6g}")
    return 10.0 ** (e + 1)


def _ramp(top: float, points: list[tuple[float, float]], n: int = 81) -> tuple[float, ...]:
    """Opacity at ``n`` evenly spaced values over [0, top], linear between ``points``."""
    import numpy as np

    xs, ys = zip(*points)
    return tuple(float(v) for v in np.interp(np.linspace(0.0, top, n), xs, ys))


def field_scale(name: str, *, drug_peak_uM: float | None = None, signal_k_su: float = 1.0,
                clim: tuple[float, float] | None = None) -> FieldScale:
    """The fixed :class:`FieldScale` of a field (``clim`` overrides the range)."""
    if name == "oxygen":
        # hypoxic marrow opaque, well-oxygenated marrow (> 16 mmHg) clear
        s = FieldScale("oxygen", "pO2 (mmHg)", (0.0, 40.0), "inferno",
                       opacity=_ramp(40.0, [(0.0, 0.9), (5.0, 0.7), (10.0, 0.35), (13.0, 0.08), (16.0, 0.0)]))
    elif name == "signal":
        hi = math.log10(signal_k_su)
        s = FieldScale("signal", "signal (log10 su)", (hi - 5.0, hi), "viridis", transform="log10",
                       opacity=(0.0, 0.0, 0.03, 0.1, 0.3, 0.6))
    elif name == "cxcl12":
        s = FieldScale("cxcl12", "CXCL12 (nM)", (0.0, 10.0), "magma",
                       opacity=(0.0, 0.02, 0.06, 0.15, 0.3, 0.5))
    elif name in ("cytarabine", "daunorubicin"):
        top = nice_ceil(drug_peak_uM) if drug_peak_uM else 1.0
        s = FieldScale(name, f"{name} (µM)", (0.0, top), "plasma" if name == "cytarabine" else "cividis",
                       opacity=(0.0, 0.004, 0.012, 0.03, 0.07, 0.15))
    elif name == "integrity":
        s = FieldScale("integrity", "integrity (1 = intact)", (0.0, 1.0), "viridis", opacity=(1.0, 1.0))
    else:  # pragma: no cover - callers validate names
        raise KeyError(name)
    if clim is not None:
        s = FieldScale(s.name, s.title, (float(clim[0]), float(clim[1])), s.cmap, s.transform, s.opacity)
    return s
