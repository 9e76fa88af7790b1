"""Integer codes shared by the kernels and the package (pure constants, no Taichi).

These codes are part of the output contract (``docs/file-format.md``): never renumber them.
"""

from __future__ import annotations

# Tissue labels (``/anatomy/tissue``, uint8).
MARROW = 0  #: hematopoietic space; holds at most one cell; diffuses and consumes
BONE = 1  #: cortical or trabecular bone; no-flux for transport
ARTERIOLE = 2  #: endosteal / transition (type H) vessel: tight, high pO2
SINUSOID = 3  #: marrow sinusoid: leaky, lower pO2
CENTRAL_SINUS = 4  #: large draining vessel along the axis (sinusoid class)
OUTSIDE = 5  #: outside the bone (femur domains): no cells, no-flux

TISSUE_NAMES = {
    MARROW: "marrow",
    BONE: "bone",
    ARTERIOLE: "arteriole",
    SINUSOID: "sinusoid",
    CENTRAL_SINUS: "central_sinus",
    OUTSIDE: "outside",
}
N_TISSUE = len(TISSUE_NAMES)
VESSEL_LABELS = (ARTERIOLE, SINUSOID, CENTRAL_SINUS)

# Vessel classes (exchange parameters are given per class).
CLASS_NONE = 0
CLASS_ARTERIOLE = 1
CLASS_SINUSOID = 2
VESSEL_CLASS_OF_TISSUE = {
    MARROW: CLASS_NONE,
    BONE: CLASS_NONE,
    ARTERIOLE: CLASS_ARTERIOLE,
    SINUSOID: CLASS_SINUSOID,
    CENTRAL_SINUS: CLASS_SINUSOID,
    OUTSIDE: CLASS_NONE,
}

# Niche slots (``/anatomy/niche``, uint8).
NICHE_NONE = 0
NICHE_ENDOSTEAL = 1  #: next to an arteriole near bone
NICHE_PERIVASCULAR = 2  #: next to a sinusoid
NICHE_NAMES = {NICHE_NONE: "none", NICHE_ENDOSTEAL: "endosteal", NICHE_PERIVASCULAR: "perivascular"}

# Cell types (``/state/cells``, uint8).
EMPTY = 0
HSC = 1
PROGENITOR = 2
LSC = 3
BLAST = 4
CELL_NAMES = {EMPTY: "empty", HSC: "hsc", PROGENITOR: "progenitor", LSC: "lsc", BLAST: "blast"}
N_CELL_TYPES = len(CELL_NAMES)

#: The six face-neighbour offsets (dz, dy, dx) of the kernels; direction d and d ^ 1 are
#: opposite (the cell lattice encodes moves by this index).
FACE_DIRECTIONS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))

# Metric regions (one byte per voxel on the device; ``marrow3d.regions`` defines them).
REGION_OTHER = 0  #: bone, outside, anything not below
REGION_ENDOSTEAL = 1  #: marrow within the endosteal band
REGION_CENTRAL = 2  #: the other marrow
REGION_ARTERIOLE = 3  #: arteriole voxels
REGION_SINUSOID = 4  #: sinusoid and central-sinus voxels
