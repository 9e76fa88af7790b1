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

__all__ = ["CAMERAS", "resolve_show", "parse_size", "frame_for", "make_plotter", "decorate", "set_camera", "fit_view",
           "render_png", "render_image"]

CAMERAS = ("iso", "xy", "xz", "yz")
_TITLES = {
    "oxygen": "Oxygen",
    "signal": "Vessel-damage signal",
    "cxcl12": "CXCL12",
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
    if mode in ("oxygen", "signal", "cxcl12"):
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
    """Camera presets, all with parallel (orthographic) projection, so lengths in the view
    plane are the same everywhere in the picture: ``iso`` (3/4 view from +x, -y, +z with z up),
    ``xy`` (down the z axis), ``xz`` (from -y), ``yz`` (from +x)."""
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
    plotter.camera.parallel_projection = True
    plotter.reset_camera(bounds=bounds)
    plotter.camera.zoom(zoom)


#: Where the domain is drawn (fractions of the picture, x0, y0, x1, y1): below the title and
#: stage, above the scale bar and subtitle, left of the colour bar; the left edge moves right
#: of the legend (see :func:`fit_view`).
SCENE_BOX = (0.03, 0.12, 0.80, 0.86)


def _corners(bounds) -> np.ndarray:
    return np.array([(x, y, z) for x in bounds[0:2] for y in bounds[2:4] for z in bounds[4:6]], dtype=float)


def fit_view(plotter, bounds, size: tuple[int, int], box=SCENE_BOX, orbit: bool = False, margin: float = 0.03) -> None:
    """Scale and shift the (parallel) camera so the domain fills ``box`` of the picture.

    With ``orbit`` the fit holds for every azimuth of a turn about the vertical axis through
    the domain centre (``movie --orbit``), so nothing runs under the legend or the colour bar
    as the camera turns.
    """
    cam = plotter.camera
    cam.SetWindowCenter(0.0, 0.0)
    m = cam.GetViewTransformMatrix()
    rot = np.array([[m.GetElement(i, j) for j in range(3)] for i in range(2)])  # camera x, y axes in world
    corners = _corners(bounds)
    centre = corners.mean(axis=0)
    sets = [corners]
    if orbit:
        up = np.array(cam.up, dtype=float)
        up /= np.linalg.norm(up)
        for a in np.linspace(0.0, 2 * np.pi, 36, endpoint=False)[1:]:
            # Rodrigues rotation of the corners about the up axis through the centre
            v = corners - centre
            vr = (v * np.cos(a) + np.cross(up, v) * np.sin(a) + np.outer(v @ up, up) * (1 - np.cos(a)))
            sets.append(vr + centre)
    pts = np.concatenate([s @ rot.T for s in sets])  # camera-plane coordinates (um)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    w, h = hi - lo
    W, H = size
    aspect = W / H
    bw, bh = box[2] - box[0], box[3] - box[1]
    s = max(h / (2.0 * bh), w / (2.0 * bw * aspect)) * (1.0 + margin)
    cam.parallel_scale = s
    # The box's projection is centred on the projected domain centre, the focal point: shift the
    # picture so that point lands in the middle of the box (a window-centre shift, so the camera
    # still turns about the domain centre).
    tx, ty = box[0] + box[2] - 1.0, box[1] + box[3] - 1.0  # box middle in [-1, 1] screen units
    cam.SetWindowCenter(-tx, -ty)
    plotter.renderer.ResetCameraClippingRange()


def _nice_length(x: float) -> float:
    e = math.floor(math.log10(x))
    best = 10.0**e
    for m in (1, 2, 5, 10):
        if m * 10.0**e <= x:
            best = m * 10.0**e
    return best


def _fmt_um(length: float) -> str:
    return f"{length:g} µm" if length < 1000 else f"{length / 1000:g} mm"


def add_scale_bar(plotter, size: tuple[int, int], *, x: float = 0.03, y: float = 0.085) -> list:
    """A bar of a round length at (``x``, ``y``) of the picture, labelled in um or mm.

    The projection is parallel, so a length in the view plane has the same size everywhere in
    the picture: the bar is exact for every distance parallel to the screen (slices and planar
    views: every distance; the iso view: foreshortened edges of the box are shorter).
    """
    from vtkmodules.vtkRenderingCore import vtkTextActor

    from ._overlay import _polygon

    W, H = size
    px_per_um = H / (2.0 * plotter.camera.parallel_scale)
    length = _nice_length(0.2 * W / px_per_um)
    L = length * px_per_um
    x0, y0 = x * W, y * H
    thick = max(2.0, H / 300)
    tick = max(5.0, H / 80)
    rgb = tuple(int(style.TEXT_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5))
    actors = [_polygon([(x0, y0 - thick / 2), (x0 + L, y0 - thick / 2), (x0 + L, y0 + thick / 2),
                        (x0, y0 + thick / 2)], rgb)]
    for xe in (x0, x0 + L - thick):
        actors.append(_polygon([(xe, y0 - tick / 2), (xe + thick, y0 - tick / 2), (xe + thick, y0 + tick / 2),
                                (xe, y0 + tick / 2)], rgb))
    label = vtkTextActor()
    label.SetInput(_fmt_um(length))
    tp = label.GetTextProperty()
    tp.SetFontSize(max(10, int(H * 0.024)))
    tp.SetColor(*rgb)
    tp.SetFontFamilyToArial()
    tp.SetVerticalJustificationToCentered()
    label.SetDisplayPosition(int(x0 + L + 0.4 * tick + 4), int(y0))
    actors.append(label)
    for a in actors:
        plotter.renderer.AddViewProp(a)
    return actors


#: Colours of the x, y and z arrows of the axis triad.
TRIAD_COLORS = {"x": "#D55E00", "y": "#009E73", "z": "#0072B2"}


def add_axis_triad(plotter, size: tuple[int, int], *, x: float = 0.925, y: float = 0.075) -> list:
    """An x, y, z orientation triad drawn in 2D at (``x``, ``y``) of the picture.

    The arrows are the world axes as the current camera projects them (call after the camera
    is set). A 2D drawing, so it stays legible at any picture size.
    """
    from vtkmodules.vtkRenderingCore import vtkTextActor

    from ._overlay import _polygon

    W, H = size
    m = plotter.camera.GetViewTransformMatrix()
    rot = np.array([[m.GetElement(i, j) for j in range(3)] for i in range(2)])
    cx, cy = x * W, y * H
    arm = 0.055 * H
    thick = max(1.5, H / 400)
    actors = []
    for axis, vec in zip("xyz", np.eye(3)):
        dx, dy = rot @ vec * arm
        rgb = tuple(int(TRIAD_COLORS[axis][i:i + 2], 16) / 255 for i in (1, 3, 5))
        n = np.hypot(dx, dy)
        if n > 1e-6:
            ux, uy = -dy / n * thick / 2, dx / n * thick / 2
            actors.append(_polygon([(cx + ux, cy + uy), (cx + dx + ux, cy + dy + uy), (cx + dx - ux, cy + dy - uy),
                                    (cx - ux, cy - uy)], rgb))
        label = vtkTextActor()
        label.SetInput(axis)
        tp = label.GetTextProperty()
        tp.SetFontSize(max(9, int(H * 0.022)))
        tp.SetColor(*rgb)
        tp.SetFontFamilyToArial()
        tp.SetBold(True)
        tp.SetJustificationToCentered()
        tp.SetVerticalJustificationToCentered()
        if n > 0.3 * arm:
            f = 1.0 + 0.35 * arm / n  # just past the tip
            label.SetDisplayPosition(int(cx + dx * f), int(cy + dy * f))
        else:  # the axis points at the viewer (or away): label it beside the origin
            label.SetDisplayPosition(int(cx - 0.35 * arm), int(cy - 0.3 * arm))
        actors.append(label)
    for a in actors:
        plotter.renderer.AddViewProp(a)
    return actors


def legend_width(entries, font_size: int) -> int:
    """Width in pixels :func:`marrow3d.viz._overlay.add_legend_2d` gives ``entries``."""
    r = font_size * 0.38
    return int(max((len(e[0]) for e in entries), default=0) * font_size * 0.5 + 3.2 * r)


def decorate(plotter, scene, frame, info: RunInfo, mode: str, drug: str | None, size: tuple[int, int],
             camera: str) -> list:
    """Title with day and disease stage, legend and subtitle (the scale bar and the triad are
    added with the camera, :func:`draw`)."""
    from ._overlay import add_legend_2d

    h = size[1]
    title = _TITLES.get(mode, "") if mode != "drug" else f"{drug.capitalize()} in marrow"  # type: ignore[union-attr]
    step_txt = "final state" if frame.step == -1 else f"snapshot {frame.step + 1} of {info.n_snapshots}"
    actors = [
        plotter.add_text(f"{title}, day {frame.day:.1f}", position=(0.02, 0.935), viewport=True,
                         font_size=max(10, int(h * 0.030)), color=style.TEXT_COLOR, font="arial", name="title"),
        plotter.add_text(f"stage: {frame.stage_name}" + (f"  ·  {scene.title}" if scene.title else ""),
                         position=(0.02, 0.89), viewport=True,
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
        actors += add_legend_2d(plotter, scene.legend, x=0.025, y_top=0.84, size=size, font_size=_legend_font(size))
    return actors


def _legend_font(size: tuple[int, int]) -> int:
    return max(8, int(size[1] * 0.025))


def scene_box(scene, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """:data:`SCENE_BOX`, its left edge right of the legend and its right edge wider without a
    colour bar."""
    x0, y0, x1, y1 = SCENE_BOX
    if scene.legend:
        x0 = max(x0, 0.025 + legend_width(scene.legend, _legend_font(size)) / size[0] + 0.02)
    if not scene.scalar_bars:
        x1 = 0.97
    return (x0, y0, x1, y1)


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


def draw(plotter, frame, info: RunInfo, mode: str, drug: str | None, *, slices, size, camera, clim,
         azimuth: float | None = None):
    """Scene, decorations, camera, scale bar and axis triad for one frame on ``plotter`` (drawn at
    ``size``). ``azimuth`` (degrees): a frame of an orbit, the camera turned that far about the
    vertical axis (the fit then holds for every azimuth)."""
    from .scene import build_scene

    # pyvista re-renders after every added actor once a plotter has rendered: hold that off
    plotter.suppress_rendering = True
    try:
        scene = build_scene(plotter, frame, info, mode, slices=slices, size=size, clim=clim, drug=drug)
        decorate(plotter, scene, frame, info, mode, drug, size, camera)
        set_camera(plotter, camera, scene.bounds)
        fit_view(plotter, scene.bounds, size, scene_box(scene, size), orbit=azimuth is not None)
        if azimuth:
            plotter.camera.Azimuth(azimuth)
        add_scale_bar(plotter, size)
        add_axis_triad(plotter, size)
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
