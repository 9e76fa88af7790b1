"""Marrow anatomy: tissue labels, vessel networks and niche slots on a voxel grid.

Generate a seeded anatomy (a box with an endosteal face, or a femur-like cylinder segment),
or import a labelled mask from imaging data; measure it and compare with the literature::

    from marrow3d.anatomy import generate_anatomy, anatomy_stats, print_stats
    from marrow3d.config.anatomy import AnatomyConfig, DomainConfig

    anatomy = generate_anatomy(DomainConfig(kind="femur", shape_voxels=(200, 100, 100)),
                               AnatomyConfig(), seed=1)
    print_stats(anatomy_stats(anatomy))

Label codes are those of :mod:`marrow3d.kernels.codes`.
"""

from __future__ import annotations

from .generate import build_anatomy, generate_anatomy
from .mask_io import anatomy_from_mask, load_mask, mask_shape, save_mask, validate_labels
from .model import Anatomy, face_neighbours
from .niches import niche_candidates
from .stats import (
    LITERATURE_RANGES,
    LiteratureRange,
    anatomy_stats,
    check_literature_ranges,
    print_stats,
    stats_table,
)

__all__ = [
    "Anatomy",
    "generate_anatomy",
    "build_anatomy",
    "load_mask",
    "mask_shape",
    "save_mask",
    "validate_labels",
    "anatomy_from_mask",
    "anatomy_stats",
    "check_literature_ranges",
    "stats_table",
    "print_stats",
    "LITERATURE_RANGES",
    "LiteratureRange",
    "niche_candidates",
    "face_neighbours",
]
