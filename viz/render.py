"""Off-screen pictures of one run time point (``marrow3d render``).

Examples
--------
>>> from marrow3d.viz import render_png                                  # doctest: +SKIP
>>> render_png("runs/tiny", "oxygen.png", show="oxygen", step=-1)     # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import style
from ._data import RunInfo, check_step, load_frame, open_run, run_info
from ._gl import RenderError, configure_headless, require_offscreen

__all__ = ["CAMERAS", "resolve_show", "parse_size", "frame_for", "make_plotter", "decorate", "set_camera",
           "render_png", "render_image"]

CAMERAS = ("iso", "xy", "xz", "yz")
#: zoom after fitting the domain: leaves room for the title, legend and colour bar
CAMERA_ZOOM = {"iso": 1.0, "xy": 1.3, "xz": 1.3, "yz": 1.3}
_TITLES = {
    "oxygen": "Oxygen",
    "signal": "Vessel-damage signal",
    "cells": "Cells by type",
    "niches": "Niche slots by holder",
    "vessels": "Vessels by class",
    "integrity": "Vessel integrity",
}


def resolve_show(show: str, info: RunInfo) -> tuple[str, str | None]:
    """Validate ``--show``; return (mode, drug field or None)."""
    raw = show.strip()
    mode = style.SHOW_ALIASES.get(raw, raw.lower())
    if mode not in style.SHOW_MODES:
        raise RenderError(f"unknown --show {show!r}: choose one of {', '.join(style.SHOW_MODES)}")
    drug = None
    if mode == "drug":
        if raw.lower() in ("cytarabine", "daunorubicin"):
            drug = raw.lower()
            if drug not in info.drug_fields:
                raise RenderError(f"the run has no {drug} field (its therapy does not give {drug})")
        elif info.drug_fields:
            drug = info.drug_fields[0]
        else:
            raise RenderError("the run has no drug field: its therapy gives no cytarabine or daunorubicin")
    return mode, drug


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """``"1600x1200"`` -> (1600, 1200)."""
    if isinstance(size, tuple):
        w, h = size
    else:
        try:
            w_s, h_s = size.lower().replace("*", "x").split("x")
            w, h = int(w_s), int(h_s)
        except ValueError:
            raise RenderError(f"bad --size {size!r}: expected WIDTHxHEIGHT in pixels, e.g. 1600x1200") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise RenderError(f"bad --size {size!r}: width and height must be 16 to 8192 pixels")
    return int(w), int(h)


def frame_for(run, info: RunInfo, step: int, mode: str, drug: str | None):
    """Load what ``mode`` needs at ``step``."""
    fields: tuple[str, ...] = ()
    if mode in ("oxygen", "signal"):
        fields = (mode,)
    elif mode == "drug":
        fields = (drug,)  # type: ignore[assignment]
    needs_cells = mode in ("cells", "niches")
    return load_frame(run, info, step, fields=fields, cells=needs_cells, integrity=True)


def make_plotter(size: tuple[int, int], off_screen: bool = True):
    """A pyvista Plotter for ``size`` = (w, h) pixels."""
    if off_screen:
        require_offscreen()
    else:
        configure_headless()
    import pyvista as pv

    p = pv.Plotter(off_screen=off_screen, window_size=list(size), lighting="three lights")
    # No VTK anti-aliasing and no depth peeling: with Mesa's llvmpipe (EGL/OSMesa) SSAA (and
    # FXAA, which falls back to it) blanks volumes and depth peeling drops translucent surfaces;
    # VTK's default order-independent blending is used. Off-screen pictures are supersampled
    # instead (rendered larger, then reduced with a Lanczos filter).
    return p


def default_camera(camera: str | None, slices) -> str:
    """``camera`` or, when not given, the planar view facing a single slice axis (else iso)."""
    if camera:
        return camera
    axes = {s.axis for s in slices or []}
    if len(axes) == 1:
        return {"z": "xy", "y": "xz", "x": "yz"}[axes.pop()]
    return "iso"


def set_camera(plotter, camera: str, bounds, zoom: float = 1.0) -> None:
    """Camera presets: ``iso`` (3/4 view, z up), ``xy`` (down the z axis), ``xz``, ``yz``."""
    if camera not in CAMERAS:
        raise RenderError(f"unknown --camera {camera!r}: choose one of {', '.join(CAMERAS)}")
    c = np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
    d = max(bounds[1] - bounds[0], bounds[3] - bounds[2], bounds[5] - bounds[4])
    if camera == "iso":
        direction, up = np.array([1.0, -1.35, 0.85]), (0, 0, 1)
    elif camera == "xy":
        direction, up = np.array([0.0, 0.0, 1.0]), (0, 1, 0)
    elif camera == "xz":
        direction, up = np.array([0.0, -1.0, 0.0]), (0, 0, 1)
    else:
        direction, up = np.array([1.0, 0.0, 0.0]), (0, 0, 1)
    direction /= np.linalg.norm(direction)
    plotter.camera_position = [tuple(c + direction * d * 3.0), tuple(c), up]
    plotter.camera.parallel_projection = camera != "iso"
    plotter.reset_camera(bounds=bounds)
    plotter.camera.zoom(zoom)
    # shift the picture right, clear of the legend on the left (the colour bar is narrower)
    plotter.camera.SetWindowCenter(-0.1, -0.02)


def _nice_length(x: float) -> float:
    e = math.floor(math.log10(x))
    best = 10.0**e
    for m in (1, 2, 5, 10):
        if m * 10.0**e <= x:
            best = m * 10.0**e
    return best


def _fmt_um(length: float) -> str:
    return f"{length:g} µm" if length < 1000 else f"{length / 1000:g} mm"


def add_scale_bar(plotter, bounds, camera: str, size: tuple[int, int]) -> list:
    """A labelled bar of a round length (um) just outside a bottom edge of the domain.

    With the planar cameras (parallel projection) the bar lies in the view plane and is exact;
    with ``iso`` it runs along the front bottom edge of the box, foreshortened like the box.
    """
    import pyvista as pv

    h = size[1]
    horiz, vert, depth = {"iso": (0, 2, 1), "xy": (0, 1, 2), "xz": (0, 2, 1), "yz": (1, 2, 0)}[camera]
    lo = np.array(bounds[0::2], dtype=float)
    hi = np.array(bounds[1::2], dtype=float)
    length = _nice_length((hi[horiz] - lo[horiz]) * 0.3)
    gap = 0.04 * max(hi - lo)
    a = lo.copy()
    if camera == "iso":  # in front of the front (y = ymin) bottom edge
        a[1] = lo[1] - gap
    else:
        a[vert] = lo[vert] - gap
        a[depth] = hi[depth] if camera in ("xy", "yz") else lo[depth]
    b = a.copy()
    b[horiz] += length
    lw = max(3, h // 220)
    actors = [plotter.add_mesh(pv.Line(a, b), color=style.TEXT_COLOR, line_width=lw)]
    tick = 0.35 * gap
    for end in (a, b):
        t0, t1 = end.copy(), end.copy()
        t0[vert] -= tick
        t1[vert] += tick
        actors.append(plotter.add_mesh(pv.Line(t0, t1), color=style.TEXT_COLOR, line_width=lw))
    mid = (a + b) / 2
    if camera == "iso":
        mid[1] -= 1.2 * gap
        mid[2] -= 0.6 * gap
    else:
        mid[vert] -= 1.1 * gap
    actors.append(plotter.add_point_labels(np.array([mid]), [_fmt_um(length)], font_size=max(10, int(h * 0.024)),
                                           text_color=style.TEXT_COLOR, shape=None, show_points=False,
                                           always_visible=True, justification_horizontal="center",
                                           justification_vertical="center", font_family="arial"))
    return actors


def decorate(plotter, scene, frame, info: RunInfo, mode: str, drug: str | None, size: tuple[int, int],
             camera: str) -> list:
    """Title with day and disease stage, legend, subtitle and a length reference."""
    from ._overlay import add_legend_2d

    h = size[1]
    title = _TITLES.get(mode, "") if mode != "drug" else f"{drug.capitalize()} in marrow"  # type: ignore[union-attr]
    step_txt = "final state" if frame.step == -1 else f"snapshot {frame.step + 1} of {info.n_snapshots}"
    actors = [
        plotter.add_text(f"{title}, day {frame.day:.1f}", position=(0.02, 0.935), viewport=True,
                         font_size=max(10, int(h * 0.030)), color=style.TEXT_COLOR, font="arial", name="title"),
        plotter.add_text(f"stage: {frame.stage_name}", position=(0.02, 0.89), viewport=True,
                         font_size=max(8, int(h * 0.022)), color=_stage_text_color(frame.stage), font="arial",
                         name="stage"),
    ]
    nz, ny, nx = info.shape
    sub = f"{info.name} · {step_txt} · {nx} x {ny} x {nz} voxels of {info.voxel_um:g} µm"
    if frame.surface_factor > 1:
        sub += (f", drawn at 1/{frame.factor} resolution" if frame.factor > 1 else "") + \
            f"{',' if frame.factor == 1 else ';'} surfaces at 1/{frame.surface_factor}"
    actors.append(plotter.add_text(sub, position=(0.02, 0.015), viewport=True, font_size=max(7, int(h * 0.015)),
                                   color="#606060", font="arial", name="subtitle"))
    if scene.legend:
        actors += add_legend_2d(plotter, scene.legend, x=0.025, y_top=0.84, size=size,
                                font_size=max(8, int(h * 0.025)))
    actors += add_scale_bar(plotter, scene.bounds, camera, size)
    return actors


def _stage_text_color(stage: int) -> str:
    return {0: "#3A3A3A", 1: "#B86E00", 2: "#B2182B"}.get(stage, "#3A3A3A")


def supersampling(size: tuple[int, int], shape=(0, 0, 0)) -> int:
    """Render-size multiplier used for anti-aliasing: 2, or 1 for pictures over 2400 px and for
    grids over 128 voxels along an axis (their surfaces already fill the software rasteriser)."""
    return 2 if max(size) <= 2400 and max(shape) <= 128 else 1


def downsample_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Reduce a supersampled (H, W, 3) picture to ``size`` = (w, h) with a Lanczos filter."""
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def draw(plotter, frame, info: RunInfo, mode: str, drug: str | None, *, slices, size, camera, clim):
    """Scene, decorations and camera for one frame on ``plotter`` (drawn at ``size``)."""
    from .scene import build_scene

    # pyvista re-renders after every added actor once a plotter has rendered: hold that off
    plotter.suppress_rendering = True
    try:
        scene = build_scene(plotter, frame, info, mode, slices=slices, size=size, clim=clim, drug=drug)
        decorate(plotter, scene, frame, info, mode, drug, size, camera)
        set_camera(plotter, camera, scene.bounds, zoom=CAMERA_ZOOM[camera])
    finally:
        plotter.suppress_rendering = False
    return scene


def render_image(run, info: RunInfo, *, show: str, step: int = -1, slices=None, size=(1600, 1200),
                 camera: str = "iso", clim=None) -> np.ndarray:
    """Render one picture and return it as an (h, w, 3) uint8 array of ``size`` = (w, h)."""
    mode, drug = resolve_show(show, info)
    check_step(info, step)
    frame = frame_for(run, info, step, mode, drug)
    ss = supersampling(size, info.shape)
    big = (size[0] * ss, size[1] * ss)
    p = make_plotter(big)
    try:
        draw(p, frame, info, mode, drug, slices=slices, size=big, camera=camera, clim=clim)
        img = p.screenshot(return_img=True)
    finally:
        p.close()
    return downsample_image(np.asarray(img), size)


def render_png(run_dir, out, *, show: str, step: int = -1, slices=None, size=(1600, 1200), camera: str | None = None,
               clim=None) -> Path:
    """Render ``show`` at snapshot ``step`` (-1 = final state) of the run in ``run_dir`` to ``out``.

    ``camera`` defaults to the view facing a single ``--slice`` axis, else ``iso``.
    """
    from .scene import parse_slices

    size = parse_size(size)
    specs = parse_slices(slices) if slices and isinstance(slices[0], str) else (slices or [])
    camera = default_camera(camera, specs)
    if camera not in CAMERAS:
        raise RenderError(f"unknown --camera {camera!r}: choose one of {', '.join(CAMERAS)}")
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        raise RenderError(f"--out {out}: the picture must end in .png, .jpg or .tif")
    with open_run(run_dir) as run:
        info = run_info(run, Path(run_dir).name)
        img = render_image(run, info, show=show, step=step, slices=specs, size=size, camera=camera, clim=clim)
    out.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    Image.fromarray(img).save(out)
    return out
