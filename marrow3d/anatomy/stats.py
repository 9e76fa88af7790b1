"""Measured statistics of an anatomy, and the literature ranges they are checked against.

:func:`anatomy_stats` measures; :data:`LITERATURE_RANGES` holds, as data, the ranges the
defaults must meet and where each comes from; :func:`check_literature_ranges` compares the
two; :func:`stats_table` renders both as a rich table. A config may move a statistic out of
its range on purpose (``configs/tiny.toml`` packs niche slots 20x denser to count shares on
~20 slots): :func:`stated_settings` finds the anatomy keys a config sets away from the
defaults, and a miss explained by one of them is reported as deliberate, not as a failure.

Distances are Euclidean between voxel centres, in um: a marrow voxel that shares a face
with a vessel voxel is one voxel (10 um by default) from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..kernels import codes
from .geometry import bone_distance_um
from .model import Anatomy

__all__ = [
    "LiteratureRange",
    "LITERATURE_RANGES",
    "BONE_DISTANCE_BANDS_UM",
    "anatomy_stats",
    "check_literature_ranges",
    "stated_settings",
    "stats_table",
    "print_stats",
]

#: Band edges (um from bone) for the arteriole density profile; the last band is open.
BONE_DISTANCE_BANDS_UM = (0.0, 50.0, 100.0, 200.0, 400.0)

_QUANTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class LiteratureRange:
    """An accepted interval for one measured statistic, with its provenance.

    Attributes
    ----------
    low, high : float
        Closed interval; ``inf`` for an open upper end.
    unit : str
    source : str
        Paper(s) (docs/model.md, References) or *assumption*.
    basis : str
        What the source says and how it becomes this interval.
    samples_key : str or None
        Dotted key of the sample size behind the statistic (e.g. the niche count).
    min_samples : int
        Below this many samples the check is not applicable (``ok=None``): a share of two
        niche slots says nothing about a literature percentage.
    config_keys : tuple of str
        Config keys that decide the statistic: a config setting one of them away from its
        default makes a miss deliberate (see :func:`stated_settings`).
    """

    low: float
    high: float
    unit: str
    source: str
    basis: str
    samples_key: str | None = None
    min_samples: int = 0
    config_keys: tuple[str, ...] = ()

    def contains(self, value: float | None) -> bool:
        """True when ``value`` is a finite number in ``[low, high]``."""
        return value is not None and np.isfinite(value) and self.low <= value <= self.high


_SINUSOID_KEYS = ("anatomy.sinusoid_spacing_um", "anatomy.sinusoid_radius_um", "anatomy.sinusoid_bone_clearance_um")

#: Literature (or documented-assumption) ranges, keyed by the dotted path of a statistic in
#: the dict :func:`anatomy_stats` returns.
LITERATURE_RANGES: dict[str, LiteratureRange] = {
    "vascular_volume_fraction": LiteratureRange(
        0.08,
        0.30,
        "1",
        "assumption, UNVERIFIED",
        "Vessel voxels / marrow-cavity voxels. Marrow is densely vascularised; 8-30% is the "
        "documented working range until the imaging papers' numbers are read "
        "(Nombela-Arrieta 2013 and Gomariz 2018 report them in their full texts).",
        config_keys=("anatomy.sinusoid_radius_um", "anatomy.sinusoid_spacing_um", "anatomy.arteriole_radius_um",
                     "anatomy.arteriole_spacing_um"),
    ),
    "distance_to_sinusoid_um.q50": LiteratureRange(
        0.0,
        20.0,
        "um",
        "Gomariz 2018",
        "Virtually all marrow cells touch or lie very close to sinusoidal endothelium: the "
        "median marrow voxel is within 2 cell diameters (20 um) of a sinusoid.",
        config_keys=_SINUSOID_KEYS,
    ),
    "marrow_within_20um_of_sinusoid_fraction": LiteratureRange(
        0.6,
        1.0,
        "1",
        "Gomariz 2018",
        "'Most' marrow within 1-2 cell diameters of a sinusoid, taken as at least 60%.",
        config_keys=_SINUSOID_KEYS,
    ),
    "distance_to_sinusoid_um.q95": LiteratureRange(
        0.0,
        60.0,
        "um",
        "assumption (Spencer 2014)",
        "No anoxic marrow (minimum pO2 ~10 mmHg, Spencer 2014) while the O2 diffusion limit "
        "of packed marrow is ~100 um: keep 95% of marrow within 60 um of a sinusoid.",
        config_keys=_SINUSOID_KEYS,
    ),
    "distance_to_arteriole_over_sinusoid_q50": LiteratureRange(
        1.5,
        np.inf,
        "1",
        "Acar 2015; Kunisaki 2013",
        "Arterioles are sparse and endosteal, sinusoids everywhere: a typical marrow voxel "
        "is clearly farther from an arteriole than from a sinusoid.",
        config_keys=("anatomy.arteriole_spacing_um", "anatomy.arteriole_band_um", "anatomy.sinusoid_spacing_um"),
    ),
    "arteriole_within_100um_of_bone_fraction": LiteratureRange(
        0.72,
        1.0,
        "1",
        "Bourke 2009; Kunisaki 2013",
        "72% of vessel fragments lie within 100 um of trabecular bone (human); arterioles "
        "are the endosteal class (mouse), so at least 72% of arteriole volume lies there.",
        config_keys=("anatomy.arteriole_band_um", "anatomy.arteriole_surface_alignment"),
    ),
    "sinusoid_diameter_um": LiteratureRange(
        10.0,
        30.0,
        "um",
        "working estimate, UNVERIFIED",
        "Mouse BM sinusoids ~10-30 um across (no mouse measurement found; the human sinus lumen "
        "is 30-70 um, histology).",
        config_keys=("anatomy.sinusoid_radius_um", "domain.voxel_um"),
    ),
    "arteriole_diameter_um": LiteratureRange(
        5.0,
        15.0,
        "um",
        "working estimate, UNVERIFIED",
        "Mouse BM arterioles < 10-15 um across (no mouse measurement found; capillaries and "
        "arterioles are narrower than sinusoids).",
        config_keys=("anatomy.arteriole_radius_um", "domain.voxel_um"),
    ),
    "niches_within_10um_of_sinusoid_fraction": LiteratureRange(
        0.75,
        0.95,
        "1",
        "Acar 2015",
        "~85% of HSCs (alpha-catulin-GFP+ c-kit+) within 10 um of a sinusoid (~90% in a "
        "seminar abstract): all niche slots, both kinds.",
        samples_key="niche_count.total",
        min_samples=10,
        config_keys=("anatomy.endosteal_niche_fraction",),
    ),
    "perivascular_niches_within_10um_of_sinusoid_fraction": LiteratureRange(
        0.85,
        1.0,
        "1",
        "Acar 2015",
        "Perivascular slots are defined by sinusoid contact, so at least Acar's 85%.",
        samples_key="niche_count.perivascular",
        min_samples=5,
    ),
    "niche_density_per_mm3.total": LiteratureRange(
        25.0,
        250.0,
        "1/mm^3",
        "Abkowitz 2002; Busch 2015; PMC5487585",
        "1-2e4 HSCs per mouse, 1 HSC per 2e4 marrow cells: 50/mm^3 at one cell per 10-um "
        "voxel; up to 5x for niche capacity above the resting HSC number (Shimoto 2017) and "
        "for the per-kind minimum in small domains; down to 0.5x for 1e4 HSCs.",
        config_keys=("anatomy.niche_density_per_mm3", "anatomy.min_niche_slots_per_kind"),
    ),
    "sinusoid_largest_component_fraction": LiteratureRange(
        0.9,
        1.0,
        "1",
        "assumption",
        "Vessel networks are connected: at least 90% of sinusoid-class voxels lie in the "
        "largest 26-connected component.",
        config_keys=("anatomy.sinusoid_persistence_length_um", "anatomy.sinusoid_branch_length_um",
                     "anatomy.sinusoid_spacing_um"),
    ),
}


def _get(stats: dict[str, Any], dotted: str) -> Any:
    node: Any = stats
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0 or not np.isfinite(values).any():
        return {f"q{q:02d}": None for q in _QUANTILES} | {"mean": None}
    v = values[np.isfinite(values)]
    qs = np.percentile(v, _QUANTILES)
    out: dict[str, float | None] = {f"q{q:02d}": float(x) for q, x in zip(_QUANTILES, qs)}
    out["mean"] = float(v.mean())
    return out


def _distance_to(mask: np.ndarray, voxel_um: float) -> np.ndarray:
    """Distance in um from every voxel centre to the nearest voxel of ``mask`` (inf if none)."""
    return bone_distance_um(mask, voxel_um)


def _ridge_diameter_um(inner: np.ndarray, cls: np.ndarray, voxel_um: float) -> float | None:
    """Median vessel diameter of one class from the inner distance map.

    ``inner`` is the distance from a vessel voxel to the nearest non-vessel voxel centre;
    on the ridge (local maxima: the centreline) a tube of diameter d has ``inner`` close to
    ``(d + voxel) / 2``, so d = 2 inner - voxel (one voxel for a one-voxel tube).
    """
    if not cls.any():
        return None
    ridge = cls & (inner >= ndi.maximum_filter(inner, size=3))
    values = inner[ridge]
    if values.size == 0:
        return None
    return float(np.median(2.0 * values - voxel_um))


def anatomy_stats(anatomy: Anatomy, bands_um: tuple[float, ...] = BONE_DISTANCE_BANDS_UM) -> dict[str, Any]:
    """Measure an anatomy: volume fractions, vessel distances, niche counts and placement.

    Parameters
    ----------
    anatomy : Anatomy
    bands_um : tuple of float
        Edges (um from bone) of the bands for the arteriole density profile.

    Returns
    -------
    dict
        JSON-serialisable (floats, ints, None, lists, dicts). Keys:

        ``shape_voxels``, ``voxel_um``, ``kind``
        ``volume_fraction`` : fraction of the whole grid per tissue label.
        ``cavity_volume_mm3``, ``marrow_volume_mm3`` : cavity = marrow + vessels.
        ``vascular_volume_fraction`` : vessel voxels / cavity voxels, and
        ``vessel_fraction_of_cavity`` per vessel label.
        ``distance_to_sinusoid_um``, ``distance_to_arteriole_um``, ``distance_to_vessel_um``,
        ``distance_to_bone_um`` : quantiles q05/q25/q50/q75/q95 and mean over marrow voxels
        (sinusoid class = sinusoids + central sinus).
        ``distance_to_arteriole_over_sinusoid_q50`` : ratio of the two medians.
        ``marrow_within_20um_of_sinusoid_fraction``
        ``arteriole_by_bone_distance`` : per band, arteriole share of the cavity voxels in
        the band (``density``) and of all arteriole voxels (``share``).
        ``arteriole_within_100um_of_bone_fraction``
        ``sinusoid_diameter_um``, ``arteriole_diameter_um``, ``central_sinus_diameter_um`` :
        median diameter on each class's centreline (voxel resolution; the central sinus:
        its widest section).
        ``sinusoid_largest_component_fraction`` : connectivity (26-neighbour).
        ``niche_count`` and ``niche_density_per_mm3`` (per mm^3 of marrow) by kind and total.
        ``perivascular_niches_within_10um_of_sinusoid_fraction``,
        ``niches_within_10um_of_sinusoid_fraction`` (all slots),
        ``endosteal_niches_within_100um_of_bone_fraction``.
    """
    t = anatomy.tissue
    vox = anatomy.voxel_um
    vmm3 = anatomy.voxel_volume_mm3
    counts = anatomy.tissue_counts
    n = max(anatomy.n_voxels, 1)
    marrow = t == codes.MARROW
    n_marrow = int(marrow.sum())
    art = t == codes.ARTERIOLE
    sin_cls = (t == codes.SINUSOID) | (t == codes.CENTRAL_SINUS)
    vessel = art | sin_cls
    n_cavity = n_marrow + int(vessel.sum())

    s: dict[str, Any] = {
        "kind": anatomy.kind,
        "shape_voxels": list(anatomy.shape),
        "voxel_um": vox,
        "volume_fraction": {name: c / n for name, c in counts.items()},
        "cavity_volume_mm3": n_cavity * vmm3,
        "marrow_volume_mm3": n_marrow * vmm3,
        "vascular_volume_fraction": (n_cavity - n_marrow) / n_cavity if n_cavity else None,
        "vessel_fraction_of_cavity": {
            name: (counts[name] / n_cavity if n_cavity else None)
            for name in ("arteriole", "sinusoid", "central_sinus")
        },
    }

    d_sin = _distance_to(sin_cls, vox)
    d_art = _distance_to(art, vox)
    d_bone = bone_distance_um(t == codes.BONE, vox)
    s["distance_to_sinusoid_um"] = _quantiles(d_sin[marrow])
    s["distance_to_arteriole_um"] = _quantiles(d_art[marrow])
    s["distance_to_vessel_um"] = _quantiles(np.minimum(d_sin, d_art)[marrow])
    s["distance_to_bone_um"] = _quantiles(d_bone[marrow])
    q_sin, q_art = s["distance_to_sinusoid_um"]["q50"], s["distance_to_arteriole_um"]["q50"]
    s["distance_to_arteriole_over_sinusoid_q50"] = q_art / q_sin if (q_art is not None and q_sin) else None
    s["marrow_within_20um_of_sinusoid_fraction"] = (
        float(np.count_nonzero(d_sin[marrow] <= 20.0 + 1e-3)) / n_marrow if n_marrow else None
    )

    # Arteriole density by distance from bone (cavity voxels only: bone and outside excluded).
    cavity = marrow | vessel
    d_cav = d_bone[cavity]
    art_cav = art[cavity]
    n_art = int(art_cav.sum())
    edges = list(bands_um) + [np.inf]
    profile = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_band = (d_cav > lo) & (d_cav <= hi) if lo > 0 else (d_cav <= hi)
        nb = int(in_band.sum())
        na = int(np.count_nonzero(art_cav & in_band))
        profile.append(
            {
                "band_um": [lo, None if np.isinf(hi) else hi],
                "cavity_voxels": nb,
                "density": na / nb if nb else None,
                "share": na / n_art if n_art else None,
            }
        )
    s["arteriole_by_bone_distance"] = profile
    s["arteriole_within_100um_of_bone_fraction"] = (
        float(np.count_nonzero(art_cav & (d_cav <= 100.0 + 1e-3))) / n_art if n_art else None
    )

    inner = _distance_to(~vessel, vox)
    s["sinusoid_diameter_um"] = _ridge_diameter_um(inner, t == codes.SINUSOID, vox)
    s["arteriole_diameter_um"] = _ridge_diameter_um(inner, art, vox)
    # One straight vessel: its widest inscribed sphere is its diameter (the ridge median
    # would mix in the staircase ridges of a voxelised disc).
    cs = t == codes.CENTRAL_SINUS
    s["central_sinus_diameter_um"] = float(2.0 * inner[cs].max() - vox) if cs.any() else None
    del inner

    if sin_cls.any():
        lab, nlab = ndi.label(sin_cls, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(lab.ravel())[1:]
        s["sinusoid_components"] = int(nlab)
        s["sinusoid_largest_component_fraction"] = float(sizes.max() / sizes.sum())
        del lab
    else:
        s["sinusoid_components"] = 0
        s["sinusoid_largest_component_fraction"] = None

    # Niche slots.
    nc = anatomy.niche_counts
    total = nc["endosteal"] + nc["perivascular"]
    marrow_mm3 = n_marrow * vmm3
    s["niche_count"] = {**nc, "total": total}
    s["niche_density_per_mm3"] = {
        k: (v / marrow_mm3 if marrow_mm3 else None) for k, v in s["niche_count"].items()
    }
    niche = anatomy.niche.ravel()
    peri = np.flatnonzero(niche == codes.NICHE_PERIVASCULAR)
    endo = np.flatnonzero(niche == codes.NICHE_ENDOSTEAL)
    both = np.flatnonzero(niche != codes.NICHE_NONE)
    d_sin_f, d_bone_f = d_sin.ravel(), d_bone.ravel()
    tol = 10.0 + 1e-3  # a face neighbour at 10-um voxels is exactly 10 um away

    def frac(idx: np.ndarray, d: np.ndarray, limit: float) -> float | None:
        return float(np.count_nonzero(d[idx] <= limit)) / idx.size if idx.size else None

    s["perivascular_niches_within_10um_of_sinusoid_fraction"] = frac(peri, d_sin_f, tol)
    s["niches_within_10um_of_sinusoid_fraction"] = frac(both, d_sin_f, tol)
    s["endosteal_niches_within_100um_of_bone_fraction"] = frac(endo, d_bone_f, 100.0 + 1e-3)
    s["endosteal_niche_distance_to_bone_um"] = _quantiles(d_bone_f[endo])
    return s


@dataclass(frozen=True)
class RangeCheck:
    """One statistic against its literature range.

    ``ok`` is None when the check does not apply: the statistic was not measurable, or it
    rests on fewer than ``range.min_samples`` samples (``note`` says which). A miss that a
    config setting explains has ``ok=False`` and ``deliberate`` naming the setting(s).
    """

    key: str
    value: float | None
    range: LiteratureRange
    ok: bool | None
    note: str = ""
    deliberate: str = ""

    @property
    def verdict(self) -> str:
        """``pass``, ``fail``, ``deliberate`` (a stated setting moves it out) or ``n/a``."""
        if self.ok is None:
            return "n/a"
        if self.ok:
            return "pass"
        return "deliberate" if self.deliberate else "fail"


def stated_settings(cfg) -> dict[str, tuple[Any, Any]]:
    """Anatomy keys ``cfg`` sets away from the defaults: ``{key: (value, default)}``.

    Looks at ``anatomy.*`` and ``domain.voxel_um``, the settings the generator's statistics
    depend on; a config file or ``--set`` that changes one states a deliberate choice.
    """
    from ..config import SimulationConfig

    default = SimulationConfig()
    out: dict[str, tuple[Any, Any]] = {}
    for key, value in cfg.anatomy.model_dump().items():
        ref = getattr(default.anatomy, key)
        if value != ref:
            out[f"anatomy.{key}"] = (value, ref)
    if cfg.domain.voxel_um != default.domain.voxel_um:
        out["domain.voxel_um"] = (cfg.domain.voxel_um, default.domain.voxel_um)
    return out


def check_literature_ranges(
    stats: dict[str, Any], ranges: dict[str, LiteratureRange] | None = None,
    settings: dict[str, tuple[Any, Any]] | None = None,
) -> list[RangeCheck]:
    """Compare measured statistics with :data:`LITERATURE_RANGES` (or ``ranges``).

    A statistic that could not be measured (``None``, e.g. arteriole distances in an
    anatomy without arterioles), or that rests on too few samples (niche shares in a domain
    with a handful of slots), gives ``ok=None``, not a failure; callers decide. A miss of a
    statistic whose ``config_keys`` include a key of ``settings`` (see :func:`stated_settings`)
    is marked deliberate.
    """
    out = []
    settings = settings or {}
    for key, rng in (ranges if ranges is not None else LITERATURE_RANGES).items():
        value = _get(stats, key)
        if value is None:
            out.append(RangeCheck(key, None, rng, None, "not measurable"))
            continue
        n = _get(stats, rng.samples_key) if rng.samples_key else None
        if n is not None and n < rng.min_samples:
            out.append(RangeCheck(key, float(value), rng, None, f"n={n}<{rng.min_samples}"))
            continue
        ok = rng.contains(float(value))
        why = "" if ok else "; ".join(f"{k} = {_fmt(settings[k][0])} (default {_fmt(settings[k][1])})"
                                      for k in rng.config_keys if k in settings)
        out.append(RangeCheck(key, float(value), rng, ok, deliberate=why))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


#: Readable labels of the table rows (the JSON keeps the dotted keys).
_QUANTILE_LABELS = {"q05": "5th percentile", "q25": "25th percentile", "q50": "median", "q75": "75th percentile",
                    "q95": "95th percentile", "mean": "mean"}


def _rows(stats: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(dotted key, label, value) of every table row, in order."""
    rows: list[tuple[str, str, Any]] = []
    for name, frac in stats["volume_fraction"].items():
        rows.append((f"volume_fraction.{name}", f"volume fraction, {name.replace('_', ' ')}", frac))
    rows += [("cavity_volume_mm3", "cavity volume (mm^3)", stats["cavity_volume_mm3"]),
             ("marrow_volume_mm3", "marrow volume (mm^3)", stats["marrow_volume_mm3"]),
             ("vascular_volume_fraction", "vascular volume fraction of the cavity", stats["vascular_volume_fraction"])]
    for group, what in (("distance_to_sinusoid_um", "sinusoid"), ("distance_to_arteriole_um", "arteriole"),
                        ("distance_to_bone_um", "bone")):
        for q, v in stats[group].items():
            rows.append((f"{group}.{q}", f"distance to {what}, {_QUANTILE_LABELS.get(q, q)} (um)", v))
    rows += [
        ("distance_to_arteriole_over_sinusoid_q50", "median distance to arteriole / to sinusoid",
         stats["distance_to_arteriole_over_sinusoid_q50"]),
        ("marrow_within_20um_of_sinusoid_fraction", "marrow within 20 um of a sinusoid (fraction)",
         stats["marrow_within_20um_of_sinusoid_fraction"]),
        ("arteriole_within_100um_of_bone_fraction", "arteriole volume within 100 um of bone (fraction)",
         stats["arteriole_within_100um_of_bone_fraction"]),
    ]
    for band in stats["arteriole_by_bone_distance"]:
        lo, hi = band["band_um"]
        span = f"{lo:g}-{'inf' if hi is None else f'{hi:g}'}"
        rows.append((f"arteriole_density_{span}", f"arteriole density {span} um from bone", band["density"]))
    rows += [
        ("sinusoid_diameter_um", "sinusoid diameter (um)", stats["sinusoid_diameter_um"]),
        ("arteriole_diameter_um", "arteriole diameter (um)", stats["arteriole_diameter_um"]),
        ("central_sinus_diameter_um", "central sinus diameter (um)", stats["central_sinus_diameter_um"]),
        ("sinusoid_components", "sinusoid networks (connected components)", stats["sinusoid_components"]),
        ("sinusoid_largest_component_fraction", "sinusoid volume in the largest network (fraction)",
         stats["sinusoid_largest_component_fraction"]),
    ]
    for k, v in stats["niche_count"].items():
        rows.append((f"niche_count.{k}", f"niche slots, {k}", v))
    for k, v in stats["niche_density_per_mm3"].items():
        rows.append((f"niche_density_per_mm3.{k}", f"niche density, {k} (1/mm^3 marrow)", v))
    rows += [
        ("perivascular_niches_within_10um_of_sinusoid_fraction", "perivascular slots within 10 um of a sinusoid",
         stats["perivascular_niches_within_10um_of_sinusoid_fraction"]),
        ("niches_within_10um_of_sinusoid_fraction", "all slots within 10 um of a sinusoid",
         stats["niches_within_10um_of_sinusoid_fraction"]),
        ("endosteal_niches_within_100um_of_bone_fraction", "endosteal slots within 100 um of bone",
         stats["endosteal_niches_within_100um_of_bone_fraction"]),
    ]
    return rows


def stats_table(stats: dict[str, Any], title: str | None = None,
                settings: dict[str, tuple[Any, Any]] | None = None):
    """A :class:`rich.table.Table` of the statistics, with literature ranges where known.

    Rows with a range show it, its source and the verdict: PASS, FAIL, ``set`` (outside the
    range because of a setting the config states, listed under the table; ``settings`` from
    :func:`stated_settings`) or n/a. Labels are words, so a narrow terminal wraps them
    between words.
    """
    from rich.table import Table

    checks = {c.key: c for c in check_literature_ranges(stats, settings=settings)}
    deliberate = [c for c in checks.values() if c.verdict == "deliberate"]
    table = Table(
        title=title or f"anatomy statistics ({stats.get('kind')}, {stats.get('shape_voxels')} voxels)",
        show_edge=False,
        expand=True,
        caption="\n".join(["set: outside the range because the config says so:"]
                          + [f"  {c.key}: {c.deliberate}" for c in deliberate]) if deliberate else None,
        caption_justify="left",
    )
    table.add_column("statistic (marrow voxels)", ratio=2, min_width=22)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("range", justify="right", no_wrap=True)
    table.add_column("source", ratio=1, min_width=13, overflow="fold")
    table.add_column("check", justify="center", no_wrap=True)
    marks = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "deliberate": "[yellow]set[/yellow]"}
    for key, label, value in _rows(stats):
        c = checks.get(key)
        if c is None:
            table.add_row(label, _fmt(value), "", "", "")
            continue
        rng = c.range
        hi = "inf" if np.isinf(rng.high) else _fmt(rng.high)
        unit = "" if rng.unit in ("1", "um") else f" {rng.unit}"
        table.add_row(label, _fmt(value), f"[{_fmt(rng.low)}, {hi}]{unit}", rng.source,
                      marks.get(c.verdict, f"n/a ({c.note})" if c.note else "n/a"))
    return table


def print_stats(stats: dict[str, Any], title: str | None = None,
                settings: dict[str, tuple[Any, Any]] | None = None) -> None:
    """Print :func:`stats_table` to the terminal (its width, or 100 columns when redirected)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=100)
    console.print(stats_table(stats, title, settings))
