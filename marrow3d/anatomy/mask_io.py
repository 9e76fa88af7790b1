"""Import (and export) labelled tissue masks: ``.npy``, ``.tif``/``.tiff`` stacks, HDF5.

A mask is a 3-D integer array ``(z, y, x)`` of tissue codes (:mod:`marrow3d.kernels.codes`):
0 marrow, 1 bone, 2 arteriole, 3 sinusoid, 4 central sinus, 5 outside. Segmented imaging
data becomes a run domain through :func:`load_mask` and :func:`anatomy_from_mask`, which
derives niche slots from the vessels by the generator's rule.

Every problem raises :class:`marrow3d.errors.MaskError` with a one-line message that names
the file (and dataset) and what is wrong. Files are never unpickled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..config.anatomy import MAX_VOXELS, AnatomyConfig
from ..errors import MaskError
from ..kernels import codes
from .geometry import bone_distance_um
from .model import Anatomy
from .niches import place_niche_slots

__all__ = [
    "load_mask",
    "mask_shape",
    "save_mask",
    "validate_labels",
    "anatomy_from_mask",
    "parse_path_spec",
    "ALLOWED_DTYPES",
    "MASK_SUFFIXES",
]

#: Integer dtypes a mask may have (labels are checked against the codes afterwards).
ALLOWED_DTYPES = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
#: File suffixes understood by :func:`load_mask`.
MASK_SUFFIXES = (".npy", ".tif", ".tiff", ".h5", ".hdf5")

_H5_SPEC = re.compile(r"^(?P<file>.+\.(?:h5|hdf5))(?::(?P<dataset>.*))?$", re.IGNORECASE)
_ALLOWED_CODES = ", ".join(f"{c} {n}" for c, n in codes.TISSUE_NAMES.items())


def parse_path_spec(path_spec: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``file.h5:/dataset`` into the file and the dataset (None for other files).

    The split happens after the ``.h5``/``.hdf5`` suffix, so colons elsewhere in the path
    (a Windows drive letter) are kept.
    """
    spec = os.fspath(path_spec)
    m = _H5_SPEC.match(spec)
    if m:
        return Path(m.group("file")), m.group("dataset")
    return Path(spec), None


def _describe(path: Path, dataset: str | None) -> str:
    return f"{str(path)!r}" if dataset is None else f"{str(path)!r} dataset {dataset!r}"


def _read_npy_magic(path: Path) -> None:
    # Check the magic ourselves: np.load falls back to unpickling anything that is not a
    # .npy, and its refusal message ("pickled data") would mislead for a merely corrupt file.
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise MaskError(f"mask {str(path)!r} cannot be opened: {exc.strerror or exc}") from None
    if magic != b"\x93NUMPY":
        kind = "a zip (.npz?) archive" if magic.startswith(b"PK") else "not in .npy format"
        raise MaskError(f"mask {str(path)!r} is {kind} (no .npy header)")


def _read_npy(path: Path) -> np.ndarray:
    _read_npy_magic(path)
    try:
        # allow_pickle=False: an object array would otherwise run arbitrary code on load.
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise MaskError(
                f"mask {str(path)!r} holds Python objects (dtype object), which are never "
                "unpickled; save an integer array"
            ) from None
        raise MaskError(f"mask {str(path)!r} is a corrupt .npy file: {exc}") from None
    except (OSError, EOFError) as exc:
        raise MaskError(f"mask {str(path)!r} is a corrupt .npy file: {exc}") from None


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            # A damaged file can parse with zero pages, and imread would then hand back an
            # empty float64 array: say what is wrong instead of complaining about its dtype.
            if len(tf.pages) == 0 or not tf.series:
                raise MaskError(f"mask {str(path)!r} is not a readable TIFF stack: no image pages")
            return np.asarray(tf.asarray())
    except MaskError:
        raise
    except Exception as exc:  # tifffile raises many types (TiffFileError, ValueError, struct.error)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaskError(f"mask {str(path)!r} is not a readable TIFF stack: {msg}") from None


def _read_h5(path: Path, dataset: str | None) -> np.ndarray:
    import h5py

    if not dataset:
        raise MaskError(f"mask {str(path)!r} is HDF5: name the dataset as '{path}:/dataset'")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise MaskError(f"mask {str(path)!r} is not a readable HDF5 file: {exc}") from None
    with f:
        if dataset not in f:
            names: list[str] = []
            f.visititems(lambda n, o: names.append("/" + n) if isinstance(o, h5py.Dataset) else None)
            listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise MaskError(f"mask {str(path)!r} has no dataset {dataset!r} (datasets: {listed or 'none'})")
        obj = f[dataset]
        if not isinstance(obj, h5py.Dataset):
            raise MaskError(f"mask {_describe(path, dataset)} is an HDF5 group, not a dataset")
        try:
            return obj[()]
        except Exception as exc:  # corrupt chunks, missing filters
            raise MaskError(f"mask {_describe(path, dataset)} cannot be read: {exc}") from None


def load_mask(path_spec: str | os.PathLike) -> np.ndarray:
    """Read and validate a labelled tissue mask.

    Parameters
    ----------
    path_spec : str or path
        ``file.npy``; ``stack.tif`` / ``stack.tiff`` (one page per z slice, or a 3-D
        image); or ``file.h5:/dataset`` (also ``.hdf5``).

    Returns
    -------
    ndarray of uint8, (z, y, x)
        Tissue codes, validated by :func:`validate_labels`.

    Raises
    ------
    MaskError
        Missing file, unknown suffix, unreadable or corrupt file, pickled content, missing
        or non-dataset HDF5 path, wrong dtype or number of dimensions, unknown labels, or
        no marrow.
    """
    arr, path, dataset = _read_any(path_spec, "mask")
    return validate_labels(arr, _describe(path, dataset))


def _read_any(path_spec: str | os.PathLike, what: str) -> tuple[np.ndarray, Path, str | None]:
    """Read a .npy, .tif/.tiff or file.h5:/dataset array; errors name ``what`` and the file."""
    path, dataset = parse_path_spec(path_spec)
    suffix = path.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise MaskError(
            f"{what} {str(path)!r} has an unknown file type {path.suffix or '(no suffix)'!r}; "
            f"use .npy, .tif/.tiff or file.h5:/dataset"
        )
    if not path.exists():
        raise MaskError(f"{what} file {str(path)!r} does not exist")
    if path.is_dir():
        raise MaskError(f"{what} path {str(path)!r} is a directory, not a file")
    if not path.is_file():  # a FIFO or device would block the read or never end
        raise MaskError(f"{what} path {str(path)!r} is not a regular file")
    if suffix == ".npy":
        arr = _read_npy(path)
    elif suffix in (".tif", ".tiff"):
        arr = _read_tiff(path)
    else:
        arr = _read_h5(path, dataset)
    return arr, path, dataset


def load_array(path_spec: str | os.PathLike, what: str = "array") -> np.ndarray:
    """Read a 3-D numeric array (e.g. a per-voxel diffusivity map) without label checks.

    Same formats as :func:`load_mask`; ``what`` names the config key in error messages.

    Raises
    ------
    MaskError
        Missing or unreadable file, unknown suffix, not 3-D, or not a real numeric dtype.
    """
    arr, path, dataset = _read_any(path_spec, what)
    if arr.ndim != 3:
        raise MaskError(f"{what}: {_describe(path, dataset)} has shape {arr.shape}; a 3-D (z, y, x) array is needed")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MaskError(f"{what}: {_describe(path, dataset)} has dtype {arr.dtype}; a real numeric dtype is needed")
    return arr


def mask_shape(path_spec: str | os.PathLike) -> tuple[int, ...]:
    """The array shape of a mask file, read from its header only (no voxel data).

    For sizing a run (memory estimates) before loading; :func:`load_mask` does the other
    checks (dtype, labels).

    Raises
    ------
    MaskError
        Missing file, a directory, unknown suffix, unreadable header, missing HDF5 dataset,
        or not 3-D.
    """
    path, dataset = parse_path_spec(path_spec)
    suffix = path.suffix.lower()
    if suffix not in MASK_SUFFIXES:
        raise MaskError(
            f"mask {str(path)!r} has an unknown file type {path.suffix or '(no suffix)'!r}; "
            f"use .npy, .tif/.tiff or file.h5:/dataset"
        )
    if not path.exists():
        raise MaskError(f"mask file {str(path)!r} does not exist")
    if path.is_dir():
        raise MaskError(f"mask path {str(path)!r} is a directory, not a file")
    if not path.is_file():
        raise MaskError(f"mask path {str(path)!r} is not a regular file")
    shape = _header_shape(path, dataset, suffix)
    if len(shape) != 3:
        raise MaskError(
            f"mask {_describe(path, dataset)} has {len(shape)} dimension(s), shape {shape}; expected 3 (z, y, x)"
        )
    return shape


def _header_shape(path: Path, dataset: str | None, suffix: str) -> tuple[int, ...]:
    try:
        if suffix == ".npy":
            _read_npy_magic(path)
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                shape, _, _ = (
                    np.lib.format.read_array_header_1_0(fh)
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0(fh)
                )
            return tuple(int(n) for n in shape)
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                return tuple(int(n) for n in tf.series[0].shape)
        import h5py

        if not dataset:
            raise MaskError(f"mask {str(path)!r} is HDF5: name the dataset as '{path}:/dataset'")
        with h5py.File(path, "r") as f:
            if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
                raise MaskError(f"mask {str(path)!r} has no dataset {dataset!r}")
            return tuple(int(n) for n in f[dataset].shape)
    except MaskError:
        raise
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaskError(f"mask {_describe(path, dataset)} has an unreadable header: {msg}") from None


def validate_labels(arr: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Check a label array and return it as C-contiguous uint8.

    Parameters
    ----------
    arr : ndarray
        Candidate tissue labels.
    name : str
        How messages name the source (a quoted path, possibly with its dataset).

    Raises
    ------
    MaskError
        With one line saying which check failed: dtype (bool, float, complex, object...
        with the allowed integer dtypes), dimensions (with the shape), size, unknown
        labels (each with its voxel count, negative ones included, and the allowed codes),
        or a mask with no marrow voxel.
    """
    arr = np.asarray(arr)
    if arr.dtype == bool:
        raise MaskError(
            f"mask {name} has dtype bool: a yes/no mask carries no tissue classes; "
            f"save integer labels ({', '.join(ALLOWED_DTYPES)}) with codes {_ALLOWED_CODES}"
        )
    if arr.dtype.name not in ALLOWED_DTYPES:
        raise MaskError(
            f"mask {name} has dtype {arr.dtype.name}; allowed: {', '.join(ALLOWED_DTYPES)} "
            f"(integer tissue codes {_ALLOWED_CODES})"
        )
    if arr.ndim != 3:
        raise MaskError(
            f"mask {name} has {arr.ndim} dimension(s), shape {tuple(arr.shape)}; expected 3 (z, y, x)"
        )
    if arr.size == 0:
        raise MaskError(f"mask {name} is empty (shape {tuple(arr.shape)})")
    if arr.size > MAX_VOXELS:
        raise MaskError(f"mask {name} has {arr.size} voxels, more than the {MAX_VOXELS} one field can index")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= codes.N_TISSUE:
        values, counts = np.unique(arr[(arr < 0) | (arr >= codes.N_TISSUE)], return_counts=True)
        shown = ", ".join(
            f"{int(v)} ({int(c)} voxel{'' if c == 1 else 's'})" for v, c in zip(values[:10], counts[:10])
        )
        more = f" and {values.size - 10} more" if values.size > 10 else ""
        raise MaskError(f"mask {name} holds unknown labels {shown}{more}; allowed codes: "
                        f"{_ALLOWED_CODES}{_wrapped_hint(arr.dtype, values)}")
    labels = np.ascontiguousarray(arr, dtype=np.uint8)
    if not np.any(labels == codes.MARROW):
        raise MaskError(
            f"mask {name} has no marrow (label {codes.MARROW}) voxels: there is no space for cells"
        )
    return labels


def _wrapped_hint(dtype: np.dtype, values: np.ndarray) -> str:
    """A hint when unknown labels are the unsigned image of small negative numbers (-1 -> 255)."""
    if dtype.kind != "u":
        return ""
    top = np.iinfo(dtype).max
    wrapped = [int(v) for v in values if top - 15 <= int(v) <= top]
    if not wrapped:
        return ""
    as_signed = ", ".join(f"{v} = {v - top - 1}" for v in wrapped[:3])
    return (f" ({as_signed} in an unsigned {dtype.itemsize * 8}-bit file: negative labels are not "
            "tissue codes either)")


def anatomy_from_mask(
    labels: np.ndarray,
    *,
    voxel_um: float = 10.0,
    origin_um: tuple[float, float, float] = (0.0, 0.0, 0.0),
    anatomy: AnatomyConfig | None = None,
    seed: int = 0,
    source: str | None = None,
) -> Anatomy:
    """Build an :class:`Anatomy` from tissue labels.

    Niche slots follow the generator's rule (:mod:`marrow3d.anatomy.niches`) with the
    niche fields of ``anatomy`` (density, endosteal fraction and band, minimum per kind),
    drawn from the same stream the generator uses for niches, so they are reproducible from
    ``seed``. Integrity is 1 on every vessel voxel.

    Parameters
    ----------
    labels : ndarray
        3-D integer tissue codes (validated here; see :func:`validate_labels`).
    voxel_um : float
        Voxel edge in um (> 0).
    origin_um : tuple of float
        Centre of voxel (0, 0, 0) in um.
    anatomy : AnatomyConfig, optional
        Niche parameters; defaults when omitted.
    seed : int
        Seed of the niche placement.
    source : str, optional
        The path specification, recorded on the result and named in errors.

    Raises
    ------
    MaskError
        Invalid labels (see :func:`validate_labels`) or a non-positive voxel size.
    """
    name = repr(source) if source else "<array>"
    if not voxel_um > 0:
        raise MaskError(f"mask {name}: voxel_um must be > 0, got {voxel_um}")
    tissue = validate_labels(labels, name)
    if tissue is labels:
        tissue = tissue.copy()  # the anatomy owns its arrays
    cfg = anatomy if anatomy is not None else AnatomyConfig()
    # Same stream layout as generate_anatomy: stream 3 places niches.
    niche_rng = np.random.default_rng(np.random.SeedSequence(int(seed)).spawn(4)[3])
    dist = bone_distance_um(tissue == codes.BONE, voxel_um)
    niche = place_niche_slots(tissue, dist, voxel_um, cfg, niche_rng)
    integrity = np.isin(tissue, codes.VESSEL_LABELS).astype(np.float32)
    return Anatomy(
        tissue=tissue,
        niche=niche,
        integrity=integrity,
        voxel_um=float(voxel_um),
        origin_um=tuple(float(v) for v in origin_um),  # type: ignore[arg-type]
        kind="mask",
        seed=int(seed),
        source=source,
    )


def save_mask(tissue: np.ndarray | Anatomy, path_spec: str | os.PathLike) -> None:
    """Write tissue labels as a mask that :func:`load_mask` reads back identically.

    Parameters
    ----------
    tissue : ndarray of uint8 or Anatomy
        The labels (an Anatomy's ``tissue`` is used).
    path_spec : str or path
        ``.npy``, ``.tif``/``.tiff`` (one page per z slice) or ``file.h5:/dataset``
        (gzip-compressed; the file is created or the dataset replaced).
    """
    arr = tissue.tissue if isinstance(tissue, Anatomy) else np.asarray(tissue)
    arr = validate_labels(arr, "to save")
    path, dataset = parse_path_spec(path_spec)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, arr, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, arr, photometric="minisblack")
    elif suffix in (".h5", ".hdf5"):
        import h5py

        if not dataset:
            raise MaskError(f"name the dataset to write: '{path}:/dataset'")
        with h5py.File(path, "a") as f:
            if dataset in f:
                del f[dataset]
            f.create_dataset(dataset, data=arr, compression="gzip", compression_opts=4, shuffle=True)
    else:
        raise MaskError(
            f"mask {str(path)!r} has an unknown file type {path.suffix or '(no suffix)'!r}; "
            "use .npy, .tif/.tiff or file.h5:/dataset"
        )
