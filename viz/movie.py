"""Movies over a run's snapshots (``marrow3d movie``): GIF through Pillow, MP4 through imageio-ffmpeg.

Every frame uses the same fixed colour scale (see :mod:`marrow3d.viz.style`), the same
camera (or a steady orbit with ``orbit=True``) and the same picture size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ._data import open_run, run_info
from ._gl import RenderError
from .render import (CAMERAS, default_camera, downsample_image, draw, frame_for, make_plotter, parse_size,
                     resolve_show, supersampling)

__all__ = ["write_movie", "movie_frames", "MP4_HINT"]

MP4_HINT = "writing .mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); .gif works without it"


def movie_frames(run, info, *, show: str, slices=None, size=(800, 600), camera: str = "iso", orbit: bool = False,
                 clim=None, steps=None, progress: Callable[[int, int], None] | None = None):
    """Yield one (h, w, 3) uint8 picture per snapshot (all snapshots unless ``steps``)."""
    mode, drug = resolve_show(show, info)
    steps = list(range(info.n_snapshots)) if steps is None else list(steps)
    if not steps:
        raise RenderError("the run has no snapshots to make a movie of (output.snapshot_every_hours was unset)")
    ss = supersampling(size, info.shape)
    big = (size[0] * ss, size[1] * ss)
    p = make_plotter(big)
    try:
        for k, step in enumerate(steps):
            frame = frame_for(run, info, step, mode, drug)
            p.clear()
            draw(p, frame, info, mode, drug, slices=slices, size=big, camera=camera, clim=clim,
                 azimuth=360.0 * k / len(steps) if orbit else None)
            p.render()  # after the first picture, screenshot() does not render by itself
            img = p.screenshot(return_img=True)
            if progress is not None:
                progress(k + 1, len(steps))
            yield downsample_image(np.asarray(img), size)
    finally:
        p.close()


def _check_mp4() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise RenderError(MP4_HINT) from None


def write_movie(run_dir, out, *, show: str, slices=None, size=None, camera: str | None = None, orbit: bool = False,
                fps: float = 4.0, clim=None, progress=None) -> tuple[Path, int]:
    """Write a GIF or MP4 of ``show`` over every snapshot; return (path, number of frames)."""
    from .scene import parse_slices

    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".gif", ".mp4"):
        raise RenderError(f"--out {out}: a movie must end in .gif or .mp4")
    if kind == ".mp4":
        _check_mp4()
    if not 0.1 <= fps <= 60:
        raise RenderError(f"--fps {fps:g}: must be between 0.1 and 60 frames per second")
    size = parse_size(size or ("1280x960" if kind == ".mp4" else "800x600"))
    if kind == ".mp4" and (size[0] % 16 or size[1] % 16):
        raise RenderError(f"--size {size[0]}x{size[1]}: MP4 frames must be multiples of 16 pixels (e.g. 1280x960)")
    specs = parse_slices(slices) if slices and isinstance(slices[0], str) else (slices or [])
    camera = default_camera(camera, specs)
    if camera not in CAMERAS:
        raise RenderError(f"unknown --camera {camera!r}: choose one of {', '.join(CAMERAS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_run(run_dir) as run:
        info = run_info(run, Path(run_dir).name)
        frames = movie_frames(run, info, show=show, slices=specs, size=size, camera=camera, orbit=orbit, clim=clim,
                              progress=progress)
        if kind == ".gif":
            n = _write_gif(out, frames, fps)
        else:
            n = _write_mp4(out, frames, fps, size)
    return out, n


def _write_gif(out: Path, frames, fps: float) -> int:
    from PIL import Image

    images = [Image.fromarray(f).quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
              for f in frames]
    tmp = out.with_name(out.name + ".part")
    # disposal=1 and optimize=False keep one GIF frame per snapshot
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0, optimize=False, disposal=1)
    tmp.replace(out)
    return len(images)


def _write_mp4(out: Path, frames, fps: float, size) -> int:
    import imageio_ffmpeg

    tmp = out.with_name(out.stem + ".part.mp4")
    writer = imageio_ffmpeg.write_frames(str(tmp), size, fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                         pix_fmt_out="yuv420p", quality=8, macro_block_size=16)
    writer.send(None)
    n = 0
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
            n += 1
    finally:
        writer.close()
    tmp.replace(out)
    return n
