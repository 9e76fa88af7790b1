"""``marrow3d view``: an interactive window over one run.

Widgets: a time slider over the snapshots, check boxes that toggle the layers (one
continuous field at a time, cells, niche slots, vessels, bone), a clip plane (tick "clip"
and drag the plane) and a point picker (right click, or ``P`` over a spot) that prints the
values of the voxel under the cursor.

The scene is built by :class:`RunViewer`, which works on any plotter: ``marrow3d view``
gives it a window, the tests an off-screen plotter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from marrow3d.kernels import codes

from . import style
from ._data import RunInfo, _field_names, check_step, load_frame
from ._gl import RenderError
from .scene import Scene, _add_bone, _add_cells, _add_field, _add_niches, _add_vessels, domain_bounds

__all__ = ["RunViewer", "view_run"]

_TOGGLES = ("cells", "niches", "vessels", "bone", "clip")


@dataclass
class _Button:
    name: str
    widget: object


class RunViewer:
    """Scene state and widget callbacks of the run viewer.

    Parameters
    ----------
    plotter : pyvista.Plotter
        Where to draw (a window, or ``off_screen=True``).
    run : RunData
        An open run (kept open while the viewer lives).
    info : RunInfo
    step : int
        Snapshot to start at (-1 = final state; default: the last snapshot, else -1).
    widgets : bool
        Add the slider, check boxes, plane widget and picker.
    """

    def __init__(self, plotter, run, info: RunInfo, *, step: int | None = None, widgets: bool = True) -> None:
        self.plotter = plotter
        self.run = run
        self.info = info
        self.fields = _field_names(run, -1)
        self.step = check_step(info, step if step is not None else (info.n_snapshots - 1 if info.n_snapshots else -1))
        self.field: str | None = "oxygen" if "oxygen" in self.fields else (self.fields[0] if self.fields else None)
        self.layers = {"cells": False, "niches": False, "vessels": True, "bone": True, "clip": False}
        self.clip_normal = (0.0, 0.0, 1.0)
        b = domain_bounds(self._frame_stub())
        self.bounds = b
        self.clip_origin = ((b[0] + b[1]) / 2, (b[2] + b[3]) / 2, (b[4] + b[5]) / 2)
        self.scene: Scene | None = None
        self.frame = None
        self.last_pick: dict | None = None
        self._buttons: list[_Button] = []
        self._label_actors: list = []
        self.rebuild()
        if widgets:
            self._add_widgets()
        from .render import set_camera

        set_camera(plotter, "iso", self.bounds)

    # ------------------------------------------------------------------ state changes
    def set_step(self, step: int) -> None:
        """Show snapshot ``step`` (-1 = final state)."""
        self.step = check_step(self.info, int(step))
        self.rebuild()

    def set_field(self, name: str | None) -> None:
        """Show one continuous field (``None`` hides fields)."""
        if name is not None and name not in self.fields:
            raise RenderError(f"the run has no {name!r} field (present: {', '.join(self.fields)})")
        self.field = name
        for b in self._buttons:
            if b.name in self.fields:
                b.widget.GetRepresentation().SetState(int(b.name == name))
        self.rebuild()

    def set_layer(self, name: str, on: bool) -> None:
        """Toggle ``cells``, ``niches``, ``vessels``, ``bone`` or ``clip``."""
        if name not in self.layers:
            raise RenderError(f"unknown layer {name!r}: one of {', '.join(self.layers)}")
        self.layers[name] = bool(on)
        self.rebuild()

    def set_clip(self, normal, origin) -> None:
        """Clip plane: keep the side opposite to ``normal`` (applied while ``clip`` is on)."""
        self.clip_normal = tuple(float(v) for v in normal)
        self.clip_origin = tuple(float(v) for v in origin)
        if self.layers["clip"]:
            self.rebuild()

    # ------------------------------------------------------------------ picking
    def pick(self, point) -> dict:
        """Values of the voxel containing ``point`` (x, y, z in um); printed and returned."""
        if point is None:
            return {}
        frame = self.frame
        idx = np.round((np.asarray(point, dtype=float) - frame.full_origin_xyz_um) / frame.voxel_um).astype(int)
        nz, ny, nx = self.info.shape
        i, j, k = int(idx[0]), int(idx[1]), int(idx[2])
        if not (0 <= i < nx and 0 <= j < ny and 0 <= k < nz):
            return {}
        out: dict = {"voxel (z, y, x)": (k, j, i), "position_um (x, y, z)": tuple(np.round(
            frame.full_origin_xyz_um + np.array([i, j, k]) * frame.voxel_um, 1))}
        out["tissue"] = codes.TISSUE_NAMES.get(int(frame.tissue[k, j, i]), "?")
        out["niche"] = codes.NICHE_NAMES.get(int(frame.niche[k, j, i]), "?")
        names = self.run.array_names(self.step)
        if "cells" in names:
            out["cell"] = codes.CELL_NAMES.get(int(self.run.array("cells", self.step)[k, j, i]), "?")
        if "lodged" in names:
            out["lodged"] = bool(self.run.array("lodged", self.step)[k, j, i])
        if "integrity" in names:
            out["integrity"] = round(float(self.run.array("integrity", self.step)[k, j, i]), 4)
        units = {"oxygen": "mmHg", "signal": "su", "cytarabine": "uM", "daunorubicin": "uM", "cxcl12": "nM"}
        for name in _field_names(self.run, self.step):
            v = float(self.run.array(name, self.step)[k, j, i])
            out[f"{name} ({units[name]})"] = float(f"{v:.4g}")
        self.last_pick = out
        print("  ".join(f"{k}: {v}" for k, v in out.items()), flush=True)
        return out

    # ------------------------------------------------------------------ drawing
    def _frame_stub(self):
        return load_frame(self.run, self.info, self.step)

    def rebuild(self) -> None:
        """Redraw every layer for the current step, toggles and clip plane."""
        from vtkmodules.vtkCommonDataModel import vtkPlane

        from ._overlay import add_legend_2d

        p = self.plotter
        size = tuple(p.window_size)
        fields = (self.field,) if self.field else ()
        need_cells = self.layers["cells"] or self.layers["niches"]
        frame = load_frame(self.run, self.info, self.step, fields=fields, cells=need_cells, integrity=True)
        self.frame = frame
        cam = p.camera_position if self.scene is not None else None
        p.suppress_rendering = True
        try:
            p.clear_actors()
            for a in self._label_actors:
                p.renderer.RemoveViewProp(a)
            self._label_actors = []
            for name in list(p.scalar_bars.keys()):
                p.remove_scalar_bar(name)
            scene = Scene(show="view", bounds=domain_bounds(frame))
            p.set_background(style.BACKGROUND)
            if self.field:
                _add_field(p, scene, frame, self.info, self.field, [], size, None, solid="volume")
            if self.layers["cells"]:
                _add_cells(p, scene, frame, [], size)
            if self.layers["niches"]:
                _add_niches(p, scene, frame, [])
            if self.layers["vessels"]:
                _add_vessels(p, scene, frame, self.info, "context" if (self.field or self.layers["cells"]) else "class", [],
                             size=size)
            if self.layers["bone"]:
                _add_bone(p, scene, frame, [], opacity=0.15)
            if self.layers["clip"]:
                plane = vtkPlane()
                plane.SetNormal(*[-v for v in self.clip_normal])
                plane.SetOrigin(*self.clip_origin)
                for actors in scene.layers.values():
                    for a in actors:
                        mapper = a.GetMapper()
                        if mapper is not None:
                            mapper.AddClippingPlane(plane)
            h = size[1]
            step_txt = "final state" if frame.step == -1 else f"snapshot {frame.step + 1} of {self.info.n_snapshots}"
            p.add_text(f"{self.info.name}: day {frame.day:.1f}  ({step_txt})", position=(0.02, 0.94), viewport=True,
                       font_size=max(9, int(h * 0.022)), color=style.TEXT_COLOR, font="arial", name="title")
            p.add_text(f"stage: {frame.stage_name}", position=(0.02, 0.905), viewport=True,
                       font_size=max(8, int(h * 0.017)), color=style.TEXT_COLOR, font="arial", name="stage")
            if scene.legend:
                self._label_actors = add_legend_2d(p, scene.legend, x=0.02, y_top=0.88, size=size,
                                                   font_size=max(8, int(h * 0.016)))
            self._add_button_labels()
            self.scene = scene
        finally:
            p.suppress_rendering = False
        if cam is not None:
            p.camera_position = cam
        p.render()

    # ------------------------------------------------------------------ widgets
    def _button_rows(self) -> list[tuple[str, bool]]:
        rows = [(f, f == self.field) for f in self.fields]
        rows += [(name, self.layers[name]) for name in _TOGGLES]
        return rows

    def _button_geometry(self, row: int) -> tuple[int, int, int]:
        h = self.plotter.window_size[1]
        size = max(14, int(h * 0.03))
        return 10, 10 + row * int(size * 1.35), size

    def _add_button_labels(self) -> None:
        h = self.plotter.window_size[1]
        for row, (name, _) in enumerate(self._button_rows()):
            x, y, size = self._button_geometry(row)
            self.plotter.add_text(name, position=(x + size + 8, y + size * 0.15), font_size=max(8, int(h * 0.011)),
                                  color=style.TEXT_COLOR, font="arial", name=f"button_{name}")

    def _add_widgets(self) -> None:
        p = self.plotter
        for row, (name, on) in enumerate(self._button_rows()):
            x, y, size = self._button_geometry(row)
            if name in self.fields:
                def cb(state, name=name):
                    self.set_field(name if state else None)
            else:
                def cb(state, name=name):
                    self.set_layer(name, state)
            w = p.add_checkbox_button_widget(cb, value=on, position=(x, y), size=size, border_size=2,
                                             color_on="#2166AC", color_off="#DDDDDD", background_color="#888888")
            self._buttons.append(_Button(name, w))
        if self.info.n_snapshots > 1:
            self.slider = p.add_slider_widget(lambda v: self.set_step(int(round(v))), [0, self.info.n_snapshots - 1],
                                              value=max(self.step, 0), title="snapshot", fmt="%.0f",
                                              pointa=(0.35, 0.06), pointb=(0.8, 0.06), style="modern",
                                              interaction_event="end", color=style.TEXT_COLOR)
        self.plane_widget = p.add_plane_widget(self.set_clip, normal=self.clip_normal, origin=self.clip_origin,
                                               bounds=self.bounds, normal_rotation=True, interaction_event="end",
                                               outline_translation=False, implicit=True, color="#666666")
        p.enable_point_picking(callback=self.pick, show_message="right-click: print the voxel's values",
                               left_clicking=False, show_point=True, font_size=max(8, int(p.window_size[1] * 0.014)),
                               color="black", tolerance=0.01)


def view_run(run_dir, *, step: int | None = None, size=(1400, 1000)) -> None:
    """Open the interactive viewer on ``run_dir`` (needs a display)."""
    from pathlib import Path

    from ._data import open_run, run_info
    from ._gl import has_display
    from .render import make_plotter

    if not has_display():
        raise RenderError("marrow3d view needs a display (no DISPLAY or WAYLAND_DISPLAY); "
                          "use marrow3d render or movie for pictures without one")
    with open_run(run_dir) as run:
        info = run_info(run, Path(run_dir).name)
        p = make_plotter(size, off_screen=False)
        RunViewer(p, run, info, step=step)
        p.show(title=f"marrow3d view {info.name}")
