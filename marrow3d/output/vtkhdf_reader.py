"""A pyvista reader for ``.vtkhdf`` files that exposes their time steps.

VTK's ``vtkHDFReader`` reads the time series of a VTKHDF file (``/VTKHDF/Steps``), and so
does ParaView, but pyvista 0.49 wraps it without a time API (``pyvista.HDFReader`` is not a
:class:`pyvista.TimeReader`; pyvista issue #7089). :class:`VTKHDFReader` is that reader with
the :class:`pyvista.TimeReader` methods added: ``time_values``, ``number_time_points``,
``set_active_time_value``, ``set_active_time_point``, ``active_time_value``.

marrow3d registers it for the ``.vtkhdf`` extension through pyvista's reader plugins
(``pyvista.readers.override`` entry point in ``pyproject.toml``), so with marrow3d installed
``pyvista.get_reader("run.vtkhdf")`` returns it. It only adds to pyvista's own reader: files
without time steps read exactly as before (one time point, value 0).

Examples
--------
>>> import pyvista as pv                                        # doctest: +SKIP
>>> reader = pv.get_reader("runs/tiny/run.vtkhdf")              # doctest: +SKIP
>>> reader.time_values                                          # doctest: +SKIP
[0.0, 12.0, 24.0, 36.0, 48.0]
>>> reader.set_active_time_value(24.0)                          # doctest: +SKIP
>>> grid = reader.read()        # the state on hour 24          # doctest: +SKIP
"""

from __future__ import annotations

import h5py
import pyvista as pv
from vtkmodules.vtkCommonExecutionModel import vtkStreamingDemandDrivenPipeline

__all__ = ["VTKHDFReader"]


class VTKHDFReader(pv.HDFReader, pv.TimeReader):
    """:class:`pyvista.HDFReader` with the time steps of the file (time values as stored)."""

    def _time_steps(self) -> tuple[float, ...]:
        self.reader.UpdateInformation()
        steps = self.reader.GetOutputInformation(0).Get(vtkStreamingDemandDrivenPipeline.TIME_STEPS())
        if steps:
            return tuple(float(t) for t in steps)
        return _static_time(self.path)

    @property
    def number_time_points(self) -> int:
        """Number of time steps (1 for a file without a time series)."""
        return max(len(self._time_steps()), 1)

    def time_point_value(self, time_point: int) -> float:
        """Time value of step ``time_point``.

        A file without a time series has one time point: the value of its field-data array
        ``Time`` when it has one (marrow3d writes a single time step that way, because VTK reads
        a one-step ``Steps`` group as static), else 0.0.
        """
        steps = self._time_steps() or (0.0,)
        if not 0 <= time_point < len(steps):
            raise IndexError(f"time point {time_point} out of range: {self.path!r} has {len(steps)} time points")
        return steps[time_point]

    @property
    def active_time_value(self) -> float:
        """Time value of the step :meth:`read` returns."""
        return self.time_point_value(self.reader.GetStep())

    def set_active_time_point(self, time_point: int) -> None:
        """Read step ``time_point`` (0-based) next."""
        self.time_point_value(time_point)  # validates
        self.reader.SetStep(int(time_point))

    def set_active_time_value(self, time_value: float) -> None:
        """Read the step whose time value equals ``time_value`` next."""
        values = self.time_values
        for k, t in enumerate(values):
            if t == float(time_value):
                self.set_active_time_point(k)
                return
        raise ValueError(f"time value {time_value} is not one of the file's time values {values}")


def _static_time(path: str) -> tuple[float, ...]:
    """``/VTKHDF/FieldData/Time`` of a file without time steps, as a 1-tuple; else ``()``."""
    try:
        with h5py.File(path, "r") as h5:
            ds = h5.get("VTKHDF/FieldData/Time")
            if isinstance(ds, h5py.Dataset) and ds.size == 1:
                return (float(ds[()].ravel()[0]),)
    except OSError:
        pass
    return ()
