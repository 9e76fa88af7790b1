"""Memory footprint of a run, computed before any allocation, and checked against the device.

The byte counts are not a guess: they mirror, array by array, what a
:class:`~marrow3d.model.MarrowModel` allocates, and ``tests/test_memory.py`` builds models
and checks them against the sum of the real allocations (the per-voxel arrays of
the checkpoint tree (``capture_model_state``), and every Taichi field and ndarray of the solver, the cell
lattice and the model found by walking their attributes).

Per voxel, float32 fields (the default), ``d`` dosed drugs (0, 1 or 2):

=========================  ==========================================================  =====
state (checkpointed)       tissue, niche, cells, flags, generation, niche_conditioned    20+4d
                           (uint8 each), niche_timer (uint16), vessel integrity (f32),
                           oxygen, signal, each drug (f32)
cell-lattice workspace     niche_ok, intent (uint8), claim (uint32)                        6
solver, finest level       coefficients D, a, vmax, s; CG vectors r(=b), z(=e), p, q,     64
                           dx; face conductances gz, gy, gx; diag, inv_diag (f32 each);
                           the float64 Newton iterate x64
solver, coarse levels      7 arrays (b, e, gz, gy, gx, diag, inv_diag) on each level,    ~4
                           1/8 the cells of the one above: 28 x (1/8 + 1/64 + ...)
solver padding             one zero plane before and after every padded array         60/nz
readouts                   region code (uint8); scratch: one field (GPU layout) or     5 / 9
                           the gathered regions of one field, at most two fields' worth
                           (CPU layout); tables (histograms, per-row offsets)
=========================  ==========================================================  =====

Besides, fixed-size float64 reduction partials: on a GPU (``voxels`` layout) 5 x (2^18 + 256)
for the solver (10.5 MB) and 40 x (2^14 + 2^7) per readout field (5.3 MB for five fields), on
a CPU (``rows``) 5 per (z, y) row and a band factor of the coarsest level (<= 512 cells);
:func:`estimate_memory` counts the layout its ``gpu`` flag names. They add about 7.5 bytes per
voxel at 128^3 on a GPU, about 0.1 at 512^3.

So 20-28 bytes of state and about 79 of device workspace (f32, GPU layout), i.e. 99-107
bytes per voxel in all on the device: 1.3-1.4 GiB for the 14.5 million voxels of the femur,
12.4-13.4 GiB for 512^3, 99-107 GiB for 1024^3 (no drug - two drugs; ``estimate_memory``).
``precision = "float64"`` doubles every float array except the (already float64) Newton
iterate: 28-44 bytes of state and about 143 of workspace. (The niche-conditioning state, 3
bytes, is allocated whether the mechanism is on or not, so switching it never changes the
footprint.)

Besides, the host keeps the anatomy arrays the model was built from (tissue, niche uint8,
integrity f32: 6 bytes), counted in ``host_bytes``. On the CPU backend device and host are
the same memory, so :func:`check_memory` adds them up there.

Not counted (data-dependent, small): the index lists of sealed marrow pockets (4 bytes per
pocket voxel, see ``kernels.coarse_solve``) and the fixed-size parameter/counter tables (under
:data:`SMALL_TABLES_BYTES`). The readout scratch of the CPU layout is counted at its bound
(two fields' worth); the real one holds the marrow twice (all, then endosteal + central).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .errors import ConfigError
from .kernels.readouts_plan import readout_device_bytes
from .kernels.solver_plan import solver_workspace_bytes

__all__ = [
    "MemoryEstimate",
    "estimate_memory",
    "state_bytes_per_voxel",
    "solver_workspace_bytes",
    "readout_bytes",
    "available_memory_bytes",
    "check_memory",
    "SMALL_TABLES_BYTES",
]

#: Upper bound of the fixed-size tables (cell parameters, counters, exposure sums, readout
#: buffer, solver scalars): included once in ``workspace_bytes``.
SMALL_TABLES_BYTES = 4096
#: uint8 per voxel of the lattice state (cells, flags, generation, niche_conditioned) and
#: anatomy (tissue, niche).
_U8_STATE = 6
#: The lattice's uint16 niche_timer (niche-conditioning clock).
_U16_STATE = 2
#: Lattice workspace per voxel: niche_ok u8, intent u8, claim u32.
_LATTICE_WORKSPACE = 1 + 1 + 4


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of a run of ``voxels`` voxels.

    Attributes
    ----------
    voxels : int
    state_bytes : int
        The prognostic per-voxel state (on the device; what a checkpoint holds).
    workspace_bytes : int
        Every other device allocation: the transport solver and the lattice workspace.
    host_bytes : int
        Host-side arrays kept for the run (anatomy copy, metric region masks; upper bound).
    """

    voxels: int
    state_bytes: int
    workspace_bytes: int
    host_bytes: int = 0

    @property
    def device_bytes(self) -> int:
        """State + workspace: what the compute device must hold."""
        return self.state_bytes + self.workspace_bytes

    @property
    def total_bytes(self) -> int:
        """Device + host bytes (the whole run when both are the CPU's memory)."""
        return self.device_bytes + self.host_bytes

    def per_voxel(self) -> dict[str, float]:
        """The same figures in bytes per voxel."""
        n = max(self.voxels, 1)
        return {"state": self.state_bytes / n, "workspace": self.workspace_bytes / n,
                "host": self.host_bytes / n, "device": self.device_bytes / n}


def _float_bytes(precision: str) -> int:
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be float32 or float64, got {precision!r}")
    return 8 if precision == "float64" else 4


def state_bytes_per_voxel(precision: str = "float32", drugs: int = 2, cxcl12: bool = False) -> int:
    """Bytes per voxel of the prognostic state with ``drugs`` dosed drug fields (and the
    CXCL12 field when ``transport.cxcl12.enabled``)."""
    f = _float_bytes(precision)
    return _U8_STATE + _U16_STATE + 4 + f * (2 + int(drugs) + int(cxcl12))  # integrity is always float32


def readout_bytes(shape, precision: str = "float32", *, gpu: bool = True, fields: int = 5) -> int:
    """Device bytes of the per-step readouts (``marrow3d.metrics.MetricsRecorder``), a bound.

    Region codes (1 byte per voxel); the scratch array (GPU layout: one field; CPU layout:
    at most two fields' worth of gathered regions); per reduction of ``fields`` (oxygen,
    integrity, signal, 2 drugs) its histograms, GPU partial sums and per-row offsets; the
    result slots (``kernels.readouts_plan.readout_device_bytes``).
    """
    return readout_device_bytes(shape, _float_bytes(precision), gpu=gpu, fields=fields)


def estimate_memory(shape: tuple[int, int, int], precision: str = "float32", *, drugs: int = 2,
                    diffusivity_map: bool = False, gpu: bool = True, cxcl12: bool = False) -> MemoryEstimate:
    """Memory of the model state, device workspace and host copies for a grid ``shape``.

    Parameters
    ----------
    shape : (nz, ny, nx)
    precision : "float32" or "float64"
        ``run.precision``.
    drugs : int
        Number of dosed drugs (each has a field); 2, the most, by default (a safe bound).
    diffusivity_map : bool
        Whether ``transport.oxygen.diffusivity_map`` is set (one more float field).
    cxcl12 : bool
        Whether ``transport.cxcl12.enabled`` (one more float field, solved on the shared solver).
    gpu : bool
        The kernels' layout, as a run on that backend chooses it: GPU (default: the solver's
        ``voxels`` plan, coarsened to one cell, with its 2^18 reduction lanes; the readouts'
        GPU scratch) or CPU (``rows``: banded coarsest level, one partial per row; the
        readouts' gathered regions), see :func:`readout_bytes` and
        :func:`kernels.solver_plan.make_plan`.
    """
    f = _float_bytes(precision)
    n = int(shape[0]) * int(shape[1]) * int(shape[2])
    state = n * state_bytes_per_voxel(precision, drugs, cxcl12)
    layout = "voxels" if gpu else "rows"
    work = solver_workspace_bytes(shape, precision, layout) + n * _LATTICE_WORKSPACE + SMALL_TABLES_BYTES
    work += readout_bytes(shape, precision, gpu=gpu, fields=3 + int(drugs))
    if diffusivity_map:
        work += n * f
    host = n * (2 + 4)  # the anatomy the model was built from: tissue, niche, integrity
    return MemoryEstimate(voxels=n, state_bytes=state, workspace_bytes=work, host_bytes=host)


def available_memory_bytes(device: str = "cpu") -> int | None:
    """Free memory of the device in bytes (None when it cannot be measured)."""
    if device == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if device == "cuda" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True, text=True, timeout=20,
            ).stdout.strip().splitlines()
            return int(float(out[0])) * 1024 * 1024
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None
    return None


def check_memory(shape: tuple[int, int, int], precision: str, device: str, *, drugs: int = 2,
                 cxcl12: bool = False) -> MemoryEstimate:
    """Refuse a grid whose memory exceeds what the device has free, before any work starts.

    On the CPU the device and host parts share the machine's memory and are added up; on a
    GPU only the device part must fit in the GPU's free memory.

    Raises
    ------
    ConfigError
        Naming ``domain.shape_voxels``, the estimate and the free memory.
    """
    est = estimate_memory(shape, precision, drugs=drugs, gpu=device != "cpu", cxcl12=cxcl12)
    n = est.voxels
    if n >= 2**31:
        raise ConfigError(
            f"domain.shape_voxels = {list(shape)} has {n} voxels; one Taichi field holds at most "
            f"2^31-1 (about 1290^3): split the domain"
        )
    need = est.total_bytes if device == "cpu" else est.device_bytes
    free = available_memory_bytes(device)
    if free is not None and need > free:
        raise ConfigError(
            f"domain.shape_voxels = {list(shape)} needs about {need / 2**30:.1f} GiB "
            f"but the {device} device has {free / 2**30:.1f} GiB free; use a smaller grid or a larger device"
        )
    return est
