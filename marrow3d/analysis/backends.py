"""Array backends of the analysis helpers: numpy/scipy, or cupy on a GPU.

Only the heavy parts (Euclidean distance transforms over the whole grid) run on the chosen
backend. Everything that produces a reported number (gathers, means, quantiles) runs in numpy
on the host, so both backends give the same results.

The cupy path computes the feature transform on the GPU and then the distances with exactly
the arithmetic of ``scipy.ndimage.distance_transform_edt`` (offsets scaled by the sampling,
squared, summed in axis order, square root), which is IEEE-exact on both devices. The two can
only differ where a voxel has several nearest targets at the same integer offset length *and*
a voxel size whose squared multiples round differently; with the usual integer voxel sizes in
um they are bit-identical.
"""

from __future__ import annotations

import numpy as np

from ..errors import Marrow3DError

__all__ = ["ArrayBackend", "get_backend", "XP_CHOICES"]

XP_CHOICES = ("numpy", "cupy")


class ArrayBackend:
    """Distance transforms on numpy/scipy (``name='numpy'``) or cupy (``name='cupy'``)."""

    def __init__(self, name: str) -> None:
        if name not in XP_CHOICES:
            raise Marrow3DError(f"xp={name!r} is not an array backend; choose one of {', '.join(XP_CHOICES)}")
        self.name = name
        self.cp = None
        self.ndi = None
        if name == "cupy":
            try:
                import cupy
                import cupyx.scipy.ndimage as ndi
            except ImportError as exc:
                raise Marrow3DError(
                    f"xp='cupy' needs the cupy package ({exc}); install it with "
                    "`pip install marrow3d[gpu]` (cupy-cuda12x) or use xp='numpy'"
                ) from None
            self.cp = cupy
            self.ndi = ndi

    def __repr__(self) -> str:
        return f"ArrayBackend({self.name!r})"

    def distance_to(self, target: np.ndarray, voxel_um: float) -> np.ndarray:
        """Distance [um] from every voxel to the nearest ``True`` voxel of ``target``.

        Parameters
        ----------
        target : ndarray of bool, shape (nz, ny, nx)
        voxel_um : float
            Isotropic voxel edge length.

        Returns
        -------
        ndarray of float64 on the host
            0 on the targets; ``inf`` everywhere when ``target`` holds no voxel.
        """
        target = np.asarray(target, dtype=bool)
        if not target.any():
            return np.full(target.shape, np.inf)
        sampling = (float(voxel_um),) * target.ndim
        if self.cp is None:
            from scipy import ndimage

            return ndimage.distance_transform_edt(~target, sampling=sampling)
        return self._distance_cupy(target, sampling)

    def _distance_cupy(self, target: np.ndarray, sampling: tuple[float, ...]) -> np.ndarray:
        cp = self.cp
        image = cp.asarray(~target)
        ft = self.ndi.distance_transform_edt(image, return_distances=False, return_indices=True)
        total = None
        for axis, step in enumerate(sampling):
            shape = [1] * target.ndim
            shape[axis] = target.shape[axis]
            index = cp.arange(target.shape[axis], dtype=ft.dtype).reshape(shape)
            d = (ft[axis] - index).astype(cp.float64)
            d *= np.float64(step)
            d = d * d
            total = d if total is None else total + d
        out = cp.sqrt(total)
        return cp.asnumpy(out)


def get_backend(xp: str | ArrayBackend) -> ArrayBackend:
    """An :class:`ArrayBackend` for ``"numpy"`` or ``"cupy"`` (raises when cupy is missing)."""
    if isinstance(xp, ArrayBackend):
        return xp
    return ArrayBackend(str(xp))
