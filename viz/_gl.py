"""Headless OpenGL: pick VTK's EGL or OSMesa window when there is no display, and probe it.

VTK >= 9.4 wheels carry X, EGL and OSMesa render windows. Without a display it tries X first
and warns ("bad X server connection"); naming the window class through
``VTK_DEFAULT_OPENGL_WINDOW`` before the first window is made avoids that. On Debian the
libraries are ``libegl1 libegl-mesa0 libgl1-mesa-dri`` (EGL, preferred) or ``libosmesa6``.
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

from marrow3d.errors import Marrow3DError

__all__ = ["RenderError", "configure_headless", "has_display", "probe_offscreen", "require_offscreen"]


class RenderError(Marrow3DError, RuntimeError):
    """Rendering cannot be done (bad --show, no GL back end, missing field...)."""


def has_display() -> bool:
    """True when an X or Wayland display is available (interactive windows possible)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure_headless() -> str | None:
    """Choose VTK's off-screen window class when there is no display; return its name.

    Leaves an explicit ``VTK_DEFAULT_OPENGL_WINDOW`` alone. Must run before the first render
    window is created (importing pyvista is fine).
    """
    if "VTK_DEFAULT_OPENGL_WINDOW" in os.environ:
        return os.environ["VTK_DEFAULT_OPENGL_WINDOW"]
    if has_display():
        return None
    if ctypes.util.find_library("EGL"):
        name = "vtkEGLRenderWindow"
    elif ctypes.util.find_library("OSMesa"):
        name = "vtkOSOpenGLRenderWindow"
    else:
        return None
    os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = name
    return name


_PROBE = """
import pyvista as pv
p = pv.Plotter(off_screen=True, window_size=(64, 48))
p.add_mesh(pv.Sphere(), color="red")
img = p.screenshot(return_img=True)
p.close()
assert img.shape == (48, 64, 3) and (img[..., 1] < 128).any(), "blank image"
print(type(p.ren_win).__name__ if p.ren_win is not None else "closed")
"""

_probe_result: tuple[bool, str] | None = None


def probe_offscreen(timeout_s: float = 120.0) -> tuple[bool, str]:
    """Render a sphere off screen in a child process: ``(ok, detail)``.

    A child process, because a missing GL library can abort the process inside VTK.
    The result is cached for the process.
    """
    global _probe_result
    if _probe_result is not None:
        return _probe_result
    env = dict(os.environ)
    window = configure_headless()
    if window:
        env["VTK_DEFAULT_OPENGL_WINDOW"] = window
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        _probe_result = (False, f"off-screen render probe timed out after {timeout_s:.0f} s")
        return _probe_result
    if proc.returncode == 0:
        _probe_result = (True, proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "ok")
    else:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        _probe_result = (False, "no working off-screen OpenGL (install libegl1 libegl-mesa0 libgl1-mesa-dri, "
                                f"or libosmesa6): {tail[-1] if tail else 'exit ' + str(proc.returncode)}")
    return _probe_result


def require_offscreen() -> None:
    """Raise :class:`RenderError` (one line) when no GL back end can render off screen.

    A cheap check (a display, or the EGL / OSMesa library is present); the full check is
    :func:`probe_offscreen`.
    """
    window = configure_headless()
    if window is None and not has_display():
        raise RenderError("no display and no EGL or OSMesa library for off-screen rendering "
                          "(on Debian: apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri, or libosmesa6)")
