"""2D overlays drawn in pixels: a legend with dark, readable labels.

pyvista's legend box colours each label like its symbol, which makes pale entries (bone,
empty niche slots) unreadable on white; this one keeps the text dark.
"""

from __future__ import annotations

import math

import numpy as np
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkRenderingCore import vtkActor2D, vtkPolyDataMapper2D, vtkTextActor
from matplotlib.colors import to_rgb

__all__ = ["add_legend_2d"]


def _polygon(points, rgb, opacity: float = 1.0):
    pts = vtkPoints()
    for px, py in points:
        pts.InsertNextPoint(px, py, 0.0)
    cells = vtkCellArray()
    cells.InsertNextCell(len(points))
    for i in range(len(points)):
        cells.InsertCellPoint(i)
    poly = vtkPolyData()
    poly.SetPoints(pts)
    poly.SetPolys(cells)
    mapper = vtkPolyDataMapper2D()
    mapper.SetInputData(poly)
    actor = vtkActor2D()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*rgb)
    actor.GetProperty().SetOpacity(opacity)
    return actor


def _marker(cx: float, cy: float, r: float, face: str, rgb):
    if face == "rectangle":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif face == "line":
        w = max(1.5, r * 0.35)
        pts = [(cx - 1.4 * r, cy - w), (cx + 1.4 * r, cy - w), (cx + 1.4 * r, cy + w), (cx - 1.4 * r, cy + w)]
    else:
        pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 25)[:-1]]
    return _polygon(pts, rgb)


def add_legend_2d(plotter, entries, *, x: float, y_top: float, size: tuple[int, int], font_size: int,
                  text_color="#202020", background=None, background_opacity: float = 0.8) -> list:
    """Legend at viewport fraction (``x``, ``y_top``) listing ``(label, colour, face)``.

    ``face`` is ``circle``, ``rectangle``, ``line`` or ``none``. No background by default;
    light line colours (outlines drawn over dark fields) get a dark one.
    Returns the 2D actors (for removal).
    """
    w, h = size
    line = font_size * 1.45
    r = font_size * 0.38
    x0 = x * w
    y0 = y_top * h
    actors = []
    widest = max((len(e[0]) for e in entries), default=0) * font_size * 0.5 + 2.6 * r
    if any(e[2] == "line" and sum(to_rgb(e[1])) > 2.1 for e in entries):
        background = "#5A5A5A"  # light line colours need a dark ground
        text_color = "#FFFFFF"
    if background is not None and entries:
        pad = font_size * 0.4
        bottom = y0 - line * len(entries) - pad
        actors.append(_polygon([(x0 - pad, bottom), (x0 + widest + pad, bottom), (x0 + widest + pad, y0 + pad),
                                (x0 - pad, y0 + pad)], to_rgb(background), background_opacity))
    for i, (label, color, face) in enumerate(entries):
        cy = y0 - line * (i + 0.5)
        text_x = x0
        if face != "none":
            actors.append(_marker(x0 + r, cy, r, face, to_rgb(color)))
            text_x = x0 + (3.2 if face == "line" else 2.6) * r
        t = vtkTextActor()
        t.SetInput(label)
        tp = t.GetTextProperty()
        tp.SetFontSize(int(font_size))
        tp.SetColor(*to_rgb(text_color))
        tp.SetFontFamilyToArial()
        tp.SetVerticalJustificationToCentered()
        t.SetDisplayPosition(int(text_x), int(cy))
        actors.append(t)
    for a in actors:
        plotter.renderer.AddViewProp(a)
    return actors
