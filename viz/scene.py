"""Scene construction: what each ``--show`` mode puts into a pyvista plotter.

Voxel arrays become :class:`pyvista.ImageData` in um with the voxel centre of (0, 0, 0) at
the run's origin. Continuous fields are drawn as an opaque block with its front octant cut
away (:func:`cutaway_faces`: every value on the visible faces gets its colour from the full
colour map), or as voxel-exact orthogonal planes with ``--slice``; the interactive viewer
keeps a volume with a clip plane. Vessels and bone are smoothed label surfaces (SurfaceNets
through ``contour_labels``); rare cells and niche slots glyphs at full resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyvista as pv
from matplotlib.colors import ListedColormap
from scipy import ndimage

from marrow3d.kernels import codes

from . import style
from ._data import Frame, RunInfo, block_reduce
from ._gl import RenderError

__all__ = ["Scene", "SliceSpec", "parse_slices", "build_scene", "voxel_grid", "field_values",
           "vessel_surfaces", "tissue_plane", "cutaway_faces"]


@dataclass(frozen=True)
class SliceSpec:
    """An axis-aligned plane: ``axis`` in ``x``/``y``/``z`` and a position in um (None = middle)."""

    axis: str
    pos_um: float | None = None

    @property
    def index_axis(self) -> int:
        """Array axis of a (z, y, x) array."""
        return {"z": 0, "y": 1, "x": 2}[self.axis]


def parse_slices(specs: list[str] | None) -> list[SliceSpec]:
    """Parse ``--slice`` values such as ``z``, ``x=320`` or ``y=150.5``."""
    out = []
    for raw in specs or []:
        text = raw.strip().lower()
        axis, _, pos = text.partition("=")
        axis = axis.strip()
        if axis not in ("x", "y", "z"):
            raise RenderError(f"bad --slice {raw!r}: expected x, y or z, optionally =POSITION_UM (e.g. z=150)")
        if pos.strip():
            try:
                value = float(pos.strip().removesuffix("um"))
            except ValueError:
                raise RenderError(f"bad --slice {raw!r}: position must be a number in um") from None
        else:
            value = None
        out.append(SliceSpec(axis, value))
    return out


@dataclass
class Scene:
    """What :func:`build_scene` added: actors by layer (for toggling) and legend entries."""

    show: str
    layers: dict[str, list] = field(default_factory=dict)
    legend: list[tuple[str, str, str]] = field(default_factory=list)
    scalar_bars: list[str] = field(default_factory=list)
    bounds: tuple[float, ...] = ()
    title: str = ""

    def add(self, layer: str, actor) -> None:
        if actor is not None:
            self.layers.setdefault(layer, []).append(actor)

    def set_visible(self, layer: str, visible: bool) -> None:
        for actor in self.layers.get(layer, []):
            actor.SetVisibility(bool(visible))


# ------------------------------------------------------------------ grids and values
def voxel_grid(frame: Frame, arrays: dict[str, np.ndarray] | None = None, *, cells: bool = False,
               factor: int | None = None) -> pv.ImageData:
    """An ImageData over the grid reduced by ``factor`` (default: the rendered grid);
    ``arrays`` (z, y, x) go in as point data at voxel centres, or as cell data (voxel boxes)
    with ``cells=True``."""
    f = frame.factor if factor is None else factor
    shape = next(iter(arrays.values())).shape if arrays else _render_shape(frame)
    nz, ny, nx = shape
    h = frame.voxel_um * f
    origin = frame.grid_origin(f)
    if cells:
        grid = pv.ImageData(dimensions=(nx + 1, ny + 1, nz + 1), spacing=(h, h, h), origin=tuple(origin - h / 2.0))
        for k, a in (arrays or {}).items():
            grid.cell_data[k] = np.ascontiguousarray(a).ravel()
    else:
        grid = pv.ImageData(dimensions=(nx, ny, nz), spacing=(h, h, h), origin=tuple(origin))
        for k, a in (arrays or {}).items():
            grid.point_data[k] = np.ascontiguousarray(a).ravel()
    return grid


def _render_shape(frame: Frame) -> tuple[int, int, int]:
    f = frame.factor
    return tuple(-(-s // f) for s in frame.tissue.shape)  # type: ignore[return-value]


def field_values(a: np.ndarray, scale: style.FieldScale) -> np.ndarray:
    """Values as coloured: log10 for log scales (floored at the bottom of the scale)."""
    if scale.transform == "log10":
        return np.log10(np.maximum(a, 10.0 ** scale.clim[0])).astype(np.float32)
    return a.astype(np.float32, copy=False)


def domain_bounds(frame: Frame) -> tuple[float, ...]:
    """(xmin, xmax, ymin, ymax, zmin, zmax) of the voxel boxes, in um."""
    nz, ny, nx = frame.tissue.shape
    o = frame.full_origin_xyz_um - frame.voxel_um / 2.0
    ext = np.array([nx, ny, nz]) * frame.voxel_um
    return (o[0], o[0] + ext[0], o[1], o[1] + ext[1], o[2], o[2] + ext[2])


# ------------------------------------------------------------------ surfaces
def _label_surface(frame: Frame, mask: np.ndarray, iterations: int = 16) -> pv.PolyData | None:
    """Smoothed closed surface around a surface-resolution boolean mask (None if empty)."""
    if not mask.any():
        return None
    grid = voxel_grid(frame, {"m": mask.astype(np.uint8)}, factor=frame.surface_factor)
    grid.set_active_scalars("m")
    surf = grid.contour_labels(smoothing=True, smoothing_iterations=iterations, output_mesh_type="triangles",
                               progress_bar=False) if _has_progress_kw() else \
        grid.contour_labels(smoothing=True, smoothing_iterations=iterations, output_mesh_type="triangles")
    if surf.n_points == 0:
        return None
    return surf.compute_normals(auto_orient_normals=False, split_vertices=False, consistent_normals=False)


def _has_progress_kw() -> bool:
    import inspect

    return "progress_bar" in inspect.signature(pv.ImageData.contour_labels).parameters


def vessel_surfaces(frame: Frame, floor: float) -> dict[str, pv.PolyData]:
    """Surfaces ``arteriole``, ``sinusoid`` (working vessels) and ``lost`` (integrity < floor).

    Working-vessel surfaces carry point data ``integrity`` (the mean integrity of the
    neighbouring vessel voxels).
    """
    t = frame.tissue
    art = t == codes.ARTERIOLE
    sin = (t == codes.SINUSOID) | (t == codes.CENTRAL_SINUS)
    integ = frame.integrity
    if integ is not None:
        lost = (art | sin) & (integ < floor)
    else:
        lost = np.zeros_like(art)
    out: dict[str, pv.PolyData] = {}
    fs = frame.surface_factor

    def red(m):
        return frame.reduce_mask(m, fs)

    parts = {"arteriole": red(art & ~lost), "sinusoid": red(sin & ~lost), "lost": red(lost)}
    ext = None
    if integ is not None:
        vessel = art | sin
        ri = block_reduce(integ, fs, "wmean", weights=vessel)
        rv = red(vessel)
        num = ndimage.uniform_filter(np.where(rv, ri, 0.0).astype(np.float32), size=3, mode="nearest")
        den = ndimage.uniform_filter(rv.astype(np.float32), size=3, mode="nearest")
        ext = np.where(rv, ri, np.where(den > 0, num / np.maximum(den, 1e-6), 1.0)).astype(np.float32)
    for name, mask in parts.items():
        surf = _label_surface(frame, mask)
        if surf is None:
            continue
        if ext is not None and name != "lost":
            probe = voxel_grid(frame, {"integrity": ext}, factor=fs)
            surf = surf.sample(probe)
        out[name] = surf
    return out


def bone_surface(frame: Frame) -> pv.PolyData | None:
    return _label_surface(frame, frame.reduce_mask(frame.tissue == codes.BONE, frame.surface_factor), iterations=24)


# ------------------------------------------------------------------ planes
_TISSUE_PLANE_COLORS = {
    codes.MARROW: "#F6F1E7",
    codes.BONE: "#D9C9A3",
    codes.ARTERIOLE: style.ARTERIOLE_COLOR,
    codes.SINUSOID: style.SINUSOID_COLOR,
    codes.CENTRAL_SINUS: style.SINUSOID_COLOR,
    codes.OUTSIDE: "#FFFFFF",
}


def _plane_index(frame: Frame, spec: SliceSpec, shape) -> int:
    ax = spec.index_axis
    n = shape[ax]
    if spec.pos_um is None:
        return n // 2
    o = frame.origin_xyz_um[2 - ax]
    idx = int(round((spec.pos_um - o) / frame.spacing_um))
    lo = o - frame.spacing_um / 2
    hi = o + (n - 0.5) * frame.spacing_um
    if not 0 <= idx < n:
        raise RenderError(f"--slice {spec.axis}={spec.pos_um:g} is outside the domain ({lo:g} to {hi:g} um along {spec.axis})")
    return idx


def slice_grid(frame: Frame, a: np.ndarray, spec: SliceSpec, name: str = "values") -> pv.ImageData:
    """One voxel-thick plane of rendered array ``a`` as a flat ImageData with cell data."""
    idx = _plane_index(frame, spec, a.shape)
    h = frame.spacing_um
    ax = spec.index_axis
    plane = np.take(a, idx, axis=ax)
    nz, ny, nx = a.shape
    o = frame.origin_xyz_um - h / 2.0
    dims = [nx + 1, ny + 1, nz + 1]
    origin = list(o)
    xyz_axis = 2 - ax  # x=0, y=1, z=2
    dims[xyz_axis] = 1
    origin[xyz_axis] = frame.origin_xyz_um[xyz_axis] + idx * h
    grid = pv.ImageData(dimensions=tuple(dims), spacing=(h, h, h), origin=tuple(origin))
    # cell order of ImageData is x fastest, then y, then z: the remaining (z, y, x) plane ravelled
    grid.cell_data[name] = np.ascontiguousarray(plane).ravel()
    return grid


def vessel_outlines(frame: Frame, spec: SliceSpec) -> dict[str, pv.PolyData]:
    """Outlines of arteriole and sinusoid cross-sections on a slice plane (lines, in um)."""
    t = frame.tissue
    f = frame.factor
    if f > 1:
        t = t[::f, ::f, ::f]
    ax = spec.index_axis
    idx = _plane_index(frame, spec, t.shape)
    plane = np.take(t, idx, axis=ax)
    h = frame.spacing_um
    out = {}
    for name, labels in (("arteriole", (codes.ARTERIOLE,)), ("sinusoid", (codes.SINUSOID, codes.CENTRAL_SINUS))):
        mask = np.isin(plane, labels).astype(np.float32)
        if not mask.any():
            continue
        dims = [1, 1, 1]
        shape2 = plane.shape  # two of (z, y, x), in that order
        rest = [a for a in range(3) if a != ax]
        for a, n in zip(rest, shape2):
            dims[2 - a] = n
        origin = list(frame.origin_xyz_um)
        origin[2 - ax] = frame.origin_xyz_um[2 - ax] + idx * h
        img = pv.ImageData(dimensions=tuple(dims), spacing=(h, h, h), origin=tuple(origin))
        img.point_data["m"] = np.pad(mask, 0).ravel()
        lines = img.contour([0.5], scalars="m")
        if lines.n_points:
            # lift the lines off the plane towards the cameras (they sit at +x, -y and +z)
            lines.points[:, 2 - ax] += (-0.6 if spec.axis == "y" else 0.6) * h
            out[name] = lines
    return out


def _face(frame: Frame, values: np.ndarray, axis: int, layer: int, at: float, lo: tuple[int, int],
          hi: tuple[int, int], name: str) -> pv.ImageData | None:
    """A flat ImageData at coordinate ``at`` (um) across array axis ``axis`` (0 z, 1 y, 2 x),
    coloured by voxel layer ``layer`` of ``values`` over the index box ``lo``-``hi`` of the
    two other axes (in (z, y, x) order)."""
    rest = [a for a in range(3) if a != axis]
    if any(h <= l for l, h in zip(lo, hi)):
        return None
    h = frame.spacing_um
    sl = [slice(None)] * 3
    sl[axis] = layer
    sl[rest[0]] = slice(lo[0], hi[0])
    sl[rest[1]] = slice(lo[1], hi[1])
    plane = values[tuple(sl)]
    dims = [1, 1, 1]  # x, y, z points
    origin = [0.0, 0.0, 0.0]
    for a, l, hh in zip(rest, lo, hi):
        dims[2 - a] = hh - l + 1
        origin[2 - a] = frame.origin_xyz_um[2 - a] + (l - 0.5) * h
    origin[2 - axis] = at
    grid = pv.ImageData(dimensions=tuple(dims), spacing=(h, h, h), origin=tuple(origin))
    grid.cell_data[name] = np.ascontiguousarray(plane).ravel()  # remaining (z, y, x) order: x fastest
    return grid


def cutaway_faces(frame: Frame, values: np.ndarray, name: str) -> list[pv.ImageData]:
    """The surface of the rendered block with its front octant removed, as flat pieces.

    The octant nearest the iso camera (high x, low y, high z half of each axis) is cut away,
    so the block shows three interior planes through its middle besides its outer faces.
    Every piece is voxel-exact (cell data of the voxel layer it bounds); the six outer faces
    are all present, so the block stays closed when the camera turns (``movie --orbit``).
    """
    nz, ny, nx = values.shape
    iz, iy, ix = nz // 2, ny // 2, nx // 2
    h = frame.spacing_um
    ox, oy, oz = frame.origin_xyz_um
    X = lambda i: ox + (i - 0.5) * h  # noqa: E731 - voxel-boundary coordinates
    Y = lambda j: oy + (j - 0.5) * h  # noqa: E731
    Z = lambda k: oz + (k - 0.5) * h  # noqa: E731
    pieces = [
        # back faces, whole: x = min, y = max, z = min
        _face(frame, values, 2, 0, X(0), (0, 0), (nz, ny), name),
        _face(frame, values, 1, ny - 1, Y(ny), (0, 0), (nz, nx), name),
        _face(frame, values, 0, 0, Z(0), (0, 0), (ny, nx), name),
        # front faces around the notch: z = max (top), x = max, y = min
        _face(frame, values, 0, nz - 1, Z(nz), (0, 0), (ny, ix), name),
        _face(frame, values, 0, nz - 1, Z(nz), (iy, ix), (ny, nx), name),
        _face(frame, values, 2, nx - 1, X(nx), (0, 0), (iz, ny), name),
        _face(frame, values, 2, nx - 1, X(nx), (iz, iy), (nz, ny), name),
        _face(frame, values, 1, 0, Y(0), (0, 0), (iz, nx), name),
        _face(frame, values, 1, 0, Y(0), (iz, 0), (nz, ix), name),
        # the three cut planes through the middle, facing the camera
        _face(frame, values, 2, ix - 1, X(ix), (iz, 0), (nz, iy), name),
        _face(frame, values, 1, iy, Y(iy), (iz, ix), (nz, nx), name),
        _face(frame, values, 0, iz - 1, Z(iz), (0, ix), (iy, nx), name),
    ]
    return [pc for pc in pieces if pc is not None]


def plane_label(frame: Frame, slices: list[SliceSpec]) -> str:
    """``"plane z = 155 µm"`` (the voxel-centre coordinate of each drawn plane), or ``""``."""
    parts = []
    shape = _render_shape(frame)
    for spec in slices:
        ax = spec.index_axis
        pos = frame.origin_xyz_um[2 - ax] + _plane_index(frame, spec, shape) * frame.spacing_um
        parts.append(f"{spec.axis} = {pos:g} µm")
    if not parts:
        return ""
    return ("plane " if len(parts) == 1 else "planes ") + ", ".join(parts)


def tissue_plane(frame: Frame, spec: SliceSpec) -> pv.ImageData:
    t = frame.tissue
    if frame.factor > 1:
        t = t[:: frame.factor, :: frame.factor, :: frame.factor]
    return slice_grid(frame, t, spec, "tissue")


def _tissue_cmap() -> ListedColormap:
    return ListedColormap([_TISSUE_PLANE_COLORS[k] for k in range(codes.N_TISSUE)])


# ------------------------------------------------------------------ the scene
def bar_labels(lo: float, hi: float) -> int:
    """How many evenly spaced colour-bar labels put round numbers on [lo, hi] (3 to 8).

    The step between labels is 1, 2, 2.5 or 5 x 10^n when one such step divides the range
    into 2 to 7 intervals (fewest labels above 3 preferred); else 5 labels.
    """
    span = hi - lo
    if not span > 0:
        return 2
    best = None
    for n in range(3, 9):
        step = span / (n - 1)
        e = math.floor(math.log10(step))
        m = step / 10.0**e
        if any(abs(m - r) < 1e-6 for r in (1.0, 2.0, 2.5, 5.0, 10.0)):
            best = n
            if n >= 4:
                break
    return best or 5


def _scalar_bar_args(title: str, size: tuple[int, int], n_labels: int = 5, fmt: str = "%.3g") -> dict:
    h = size[1]
    return dict(title=title + "\n", vertical=True, position_x=0.87, position_y=0.12, width=0.05, height=0.62,
                title_font_size=max(10, int(h * 0.026)), label_font_size=max(9, int(h * 0.022)),
                n_labels=n_labels, fmt=fmt, color=style.TEXT_COLOR, font_family="arial", bold=False)


def build_scene(plotter: pv.Plotter, frame: Frame, info: RunInfo, show: str, *,
                slices: list[SliceSpec] | None = None, size: tuple[int, int] = (1600, 1200),
                clim: tuple[float, float] | None = None, drug: str | None = None) -> Scene:
    """Add the actors of one ``--show`` mode for ``frame`` to ``plotter`` (no camera, no text)."""
    slices = slices or []
    scene = Scene(show=show, bounds=domain_bounds(frame), title=plane_label(frame, slices))
    plotter.set_background(style.BACKGROUND)
    if slices or show not in ("oxygen", "signal", "cxcl12", "drug"):  # a cut-away block draws its own edges
        outline = pv.Box(bounds=scene.bounds).outline()
        scene.add("outline", plotter.add_mesh(outline, color="#9A9A9A", line_width=1.0))

    if show in ("oxygen", "signal", "cxcl12", "drug"):
        name = drug if show == "drug" else show
        _add_field(plotter, scene, frame, info, name, slices, size, clim)  # bone is drawn in its colour
    elif show == "cells":
        _add_cells(plotter, scene, frame, slices, size)
        if not slices:
            _add_vessels(plotter, scene, frame, info, "context", slices, sinusoid_color="#B4B4B4")
            _add_bone(plotter, scene, frame, slices, opacity=0.12)
    elif show == "niches":
        _add_niches(plotter, scene, frame, slices)
        _add_vessels(plotter, scene, frame, info, "faint", slices)
        _add_bone(plotter, scene, frame, slices, opacity=0.15)
    elif show in ("vessels", "integrity"):
        _add_vessels(plotter, scene, frame, info, "class" if show == "vessels" else "integrity", slices, size=size)
        _add_bone(plotter, scene, frame, slices, opacity=0.18)
    else:  # pragma: no cover - validated by the caller
        raise RenderError(f"unknown --show {show!r}")
    if slices and show not in ("oxygen", "signal", "cxcl12", "drug", "cells"):
        for spec in slices:
            plane = tissue_plane(frame, spec)
            scene.add("slice", plotter.add_mesh(plane, scalars="tissue", cmap=_tissue_cmap(), clim=(-0.5, codes.N_TISSUE - 0.5),
                                                n_colors=codes.N_TISSUE, show_scalar_bar=False, opacity=0.85))
    return scene


def _clip(mesh: pv.DataSet, slices: list[SliceSpec], frame: Frame) -> pv.DataSet:
    """Cut-away: keep the part of ``mesh`` at or below each slice plane."""
    for spec in slices:
        pos = spec.pos_um
        if pos is None:
            b = domain_bounds(frame)
            k = {"x": 0, "y": 2, "z": 4}[spec.axis]
            pos = (b[k] + b[k + 1]) / 2
        normal = {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}[spec.axis]
        origin = [0.0, 0.0, 0.0]
        origin["xyz".index(spec.axis)] = pos
        mesh = mesh.clip(normal=normal, origin=origin, invert=True)
    return mesh


def _transported(frame: Frame) -> np.ndarray:
    """Rendered-resolution mask of voxels that carry transport fields (marrow and vessels)."""
    t = frame.tissue
    solid = (t == codes.BONE) | (t == codes.OUTSIDE)
    if frame.factor == 1:
        return ~solid
    return ~(block_reduce(solid, frame.factor, "mean") >= 0.5)


def _add_field(plotter, scene, frame, info, name, slices, size, clim, solid: str = "cutaway") -> None:
    """The field as ``slices``, else as a cut-away block (``solid="cutaway"``) or a volume."""
    scale = style.field_scale(name, drug_peak_uM=info.drug_peak_uM.get(name), signal_k_su=info.signal_k_su, clim=clim)
    vals = field_values(frame.fields[name], scale)
    live = _transported(frame)
    bar = _scalar_bar_args(scale.title, size, n_labels=bar_labels(*scale.clim))
    scene.scalar_bars.append(scale.title)
    if not slices and solid == "cutaway":
        vals = np.where(live, vals, np.nan).astype(np.float32)
        lw = max(1.0, size[1] / 700)
        for i, piece in enumerate(cutaway_faces(frame, vals, scale.title)):
            scene.add("field", plotter.add_mesh(piece, scalars=scale.title, cmap=scale.cmap, clim=scale.clim,
                                                nan_color=style.BONE_COLOR, show_scalar_bar=(i == 0),
                                                scalar_bar_args=bar, lighting=False))
            # unlit faces keep their exact colours; edges show the block's shape and the cut
            scene.add("field", plotter.add_mesh(piece.outline(), color="#4A4A4A", line_width=lw, lighting=False))
        if not live.all():
            scene.legend.append(("bone", style.BONE_COLOR, "rectangle"))
        return
    if slices:
        vals = np.where(live, vals, np.nan).astype(np.float32)
        solid_shown = False
        for i, spec in enumerate(slices):
            plane = slice_grid(frame, vals, spec, scale.title)
            solid_shown |= bool(np.isnan(plane.cell_data[scale.title]).any())
            scene.add("field", plotter.add_mesh(plane, scalars=scale.title, cmap=scale.cmap, clim=scale.clim,
                                                nan_color=style.BONE_COLOR, show_scalar_bar=(i == 0),
                                                scalar_bar_args=bar, lighting=False))
            _add_outlines(plotter, scene, frame, spec, size)
        if solid_shown:
            scene.legend.append(("bone", style.BONE_COLOR, "rectangle"))
        return
    vals = np.where(live, vals, np.float32(scale.clear_value))
    grid = voxel_grid(frame, {scale.title: vals})
    actor = plotter.add_volume(grid, scalars=scale.title, cmap=scale.cmap, clim=scale.clim, opacity=list(scale.opacity),
                               opacity_unit_distance=frame.spacing_um * 3.0, shade=False, scalar_bar_args=bar,
                               mapper="smart")
    scene.add("field", actor)


def _add_outlines(plotter, scene, frame, spec, size, colors=("#FF5A5A", "#BFE0FF")) -> None:
    """Arteriole and sinusoid cross-sections on a slice, as lines in ``colors``."""
    lw = max(1.5, size[1] / 600)
    found = vessel_outlines(frame, spec)
    for name, lines in found.items():
        color = colors[0] if name == "arteriole" else colors[1]
        scene.add("outlines", plotter.add_mesh(lines, color=color, line_width=lw * (1.6 if name == "arteriole" else 1.0),
                                               lighting=False))
    have = [e[0] for e in scene.legend]
    for name, color in (("arteriole", colors[0]), ("sinusoid", colors[1])):
        if name in found and f"{name} (outline)" not in have:
            scene.legend.append((f"{name} (outline)", color, "line"))


def _add_bone(plotter, scene, frame, slices, opacity) -> None:
    bone = bone_surface(frame)
    if bone is None:
        return
    if slices:
        bone = _clip(bone, slices, frame)
    if bone.n_points:
        scene.add("bone", plotter.add_mesh(bone, color=style.BONE_COLOR, opacity=opacity, smooth_shading=True,
                                           specular=0.1))
        scene.legend.append(("bone", style.BONE_COLOR, "rectangle"))


def _add_vessels(plotter, scene, frame, info, mode, slices, size=(1600, 1200),
                 sinusoid_color: str = style.SINUSOID_COLOR) -> None:
    surfs = vessel_surfaces(frame, info.integrity_floor)
    if slices:
        surfs = {k: _clip(v, slices, frame) for k, v in surfs.items()}
        surfs = {k: v for k, v in surfs.items() if v.n_points}
    look = {
        # mode: (arteriole opacity, sinusoid opacity, lost opacity)
        "context": (0.9, 0.04, 0.5),
        "faint": (0.45, 0.04, 0.3),
        "class": (1.0, 0.14, 0.6),
        "integrity": (1.0, 0.07, 0.6),
    }[mode]
    if mode == "integrity":
        scale = style.field_scale("integrity")
        bar = _scalar_bar_args(scale.title, size)
        first = True
        for name, opac in (("arteriole", look[0]), ("sinusoid", look[1])):
            if name in surfs:
                scene.add("vessels", plotter.add_mesh(surfs[name], scalars="integrity", cmap=scale.cmap, clim=scale.clim,
                                                      opacity=opac, smooth_shading=True, show_scalar_bar=first,
                                                      scalar_bar_args=bar))
                first = False
        scene.scalar_bars.append(scale.title)
        scene.legend += [("opaque: arterioles", "#000000", "none"),
                         ("translucent: sinusoids", "#000000", "none"),
                         ("colour: integrity (right)", "#000000", "none")]
    else:
        if "arteriole" in surfs:
            scene.add("vessels", plotter.add_mesh(surfs["arteriole"], color=style.ARTERIOLE_COLOR, opacity=look[0],
                                                  smooth_shading=True, specular=0.3))
            scene.legend.append(("arteriole", style.ARTERIOLE_COLOR, "circle"))
        if "sinusoid" in surfs:
            scene.add("vessels", plotter.add_mesh(surfs["sinusoid"], color=sinusoid_color, opacity=look[1],
                                                  smooth_shading=True, specular=0.2))
            scene.legend.append(("sinusoid", sinusoid_color, "circle"))
    if "lost" in surfs:
        scene.add("vessels", plotter.add_mesh(surfs["lost"], color=style.LOST_COLOR, opacity=look[2],
                                              smooth_shading=True, specular=0.0))
        scene.legend.append((f"lost vessel (integrity < {info.integrity_floor:g})", style.LOST_COLOR, "circle"))


def _glyph_radius(frame: Frame, frac: float) -> float:
    b = domain_bounds(frame)
    extent = max(b[1] - b[0], b[3] - b[2], b[5] - b[4])
    return max(0.6 * frame.voxel_um, extent * frac)


def _add_cells(plotter, scene, frame, slices, size) -> None:
    cells = frame.cells
    assert cells is not None
    marrow = frame.tissue == codes.MARROW
    if slices:
        rc = frame.reduce_cells(np.where(marrow, cells, codes.EMPTY))
        cmap = ListedColormap(["#FFFFFF"] + [style.CELL_COLORS[k] for k in (codes.HSC, codes.PROGENITOR, codes.LSC, codes.BLAST)])
        for spec in slices:
            plane = slice_grid(frame, rc, spec, "cell type")
            scene.add("cells", plotter.add_mesh(plane, scalars="cell type", cmap=cmap, clim=(-0.5, 4.5), n_colors=5,
                                                show_scalar_bar=False, lighting=False))
            _add_outlines(plotter, scene, frame, spec, size, colors=("#7A0010", "#1B3F7A"))
    else:
        # abundant types as one categorical volume (0 transparent, 1 progenitor, 2 blast)
        rc = frame.reduce_cells(np.where(marrow, cells, codes.EMPTY))
        cat = np.zeros(rc.shape, np.uint8)
        cat[rc == codes.PROGENITOR] = 1
        cat[rc == codes.BLAST] = 2
        if cat.any():
            scene.add("cells", _add_categorical_volume(plotter, frame, cat, ["#FFFFFF", style.CELL_COLORS[codes.PROGENITOR],
                                                                              style.CELL_COLORS[codes.BLAST]],
                                                       [0.0, 0.07, 0.22]))
        # rare stem cells as spheres, at full resolution
        r = _glyph_radius(frame, 1 / 70)
        for code in (codes.HSC, codes.LSC):
            idx = np.nonzero(marrow & (cells == code))
            if idx[0].size == 0:
                continue
            pts = pv.PolyData(frame.voxel_centres(idx))
            glyphs = pts.glyph(geom=pv.Sphere(radius=r, theta_resolution=16, phi_resolution=12), scale=False, orient=False)
            scene.add("cells", plotter.add_mesh(glyphs, color=style.CELL_COLORS[code], smooth_shading=True, specular=0.3))
    for code in (codes.HSC, codes.PROGENITOR, codes.LSC, codes.BLAST):
        n = int(np.count_nonzero(marrow & (cells == code)))
        scene.legend.append((f"{style.CELL_LABELS[code]} ({n:,})", style.CELL_COLORS[code], "circle"))


def _add_categorical_volume(plotter, frame, cat: np.ndarray, colors: list[str], opacities: list[float]):
    """Volume of small integer categories 0..n-1 with one colour and opacity each.

    Nearest-neighbour sampling keeps values integral, so with ``clim = (0, n-1)`` each
    category gets exactly its colour (a resampled n-colour map) and opacity (the n-point
    ramp's knots). An opacity table as long as ``n_colors`` renders nothing with Mesa.
    """
    n = len(colors)
    grid = voxel_grid(frame, {"category": cat.astype(np.float32)})
    actor = plotter.add_volume(grid, scalars="category", cmap=ListedColormap(colors), clim=(0, n - 1),
                               opacity=list(opacities), n_colors=256, opacity_unit_distance=frame.spacing_um,
                               shade=False, show_scalar_bar=False, mapper="smart")
    actor.prop.interpolation_type = "nearest"
    return actor


def niche_holders(frame: Frame) -> dict[str, np.ndarray]:
    """Boolean (z, y, x) masks of niche slots by holder: ``HSC``, ``LSC`` (lodged there),
    ``other cell`` and ``empty``."""
    cells, lodged = frame.cells, frame.lodged
    assert cells is not None and lodged is not None
    slot = (frame.niche != codes.NICHE_NONE) & (frame.tissue == codes.MARROW)
    held = lodged != 0
    hsc = slot & held & (cells == codes.HSC)
    lsc = slot & held & (cells == codes.LSC)
    empty = slot & (cells == codes.EMPTY)
    return {"HSC": hsc, "LSC": lsc, "other cell": slot & ~hsc & ~lsc & ~empty, "empty": empty}


def _add_niches(plotter, scene, frame, slices) -> None:
    r = _glyph_radius(frame, 1 / 60)
    shapes = {codes.NICHE_ENDOSTEAL: pv.Cube(x_length=2 * r, y_length=2 * r, z_length=2 * r),
              codes.NICHE_PERIVASCULAR: pv.Sphere(radius=r, theta_resolution=16, phi_resolution=12)}
    for holder, mask in niche_holders(frame).items():
        color = style.NICHE_HOLDER_COLORS[holder]
        total = 0
        for kind, geom in shapes.items():
            idx = np.nonzero(mask & (frame.niche == kind))
            total += idx[0].size
            if idx[0].size == 0:
                continue
            pts = pv.PolyData(frame.voxel_centres(idx))
            if slices:
                pts = _clip(pts, slices, frame)
                if pts.n_points == 0:
                    continue
            glyphs = pts.glyph(geom=geom, scale=False, orient=False)
            scene.add("niches", plotter.add_mesh(glyphs, color=color, smooth_shading=kind == codes.NICHE_PERIVASCULAR,
                                                 specular=0.3, show_edges=False))
        scene.legend.append((f"{holder} ({total})", color, "circle"))
    scene.legend.append(("cube: endosteal, sphere: perivascular", "#FFFFFF", "none"))
