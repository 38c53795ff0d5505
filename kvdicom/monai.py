"""kvdicom as a MONAI reader: ``LoadImage(reader=KvDicomReader())``, ``LoadImaged(keys, reader=KvDicomReader())``.

Swapping MONAI's ``ITKReader`` or ``PydicomReader`` for this one changes nothing downstream: the array comes
in ITKReader's axis order (columns, rows, slices; samples last for colour), with the meta keys MONAI's
readers write (``affine`` and ``original_affine``, RAS by default or LPS with ``affine_lps_to_ras=False``,
``spatial_shape``, ``spacing``, ``original_channel_dim``, ``space``; ``LoadImage`` adds ``filename_or_obj``)
and, like ``PydicomReader``'s pruned meta, Image Orientation / Position (Patient) and Pixel Spacing under their
tags. Rescale Slope / Intercept are applied (float32), as both readers do. With ``device="cuda"`` the array is
CuPy, so ``EnsureTyped(device=...)`` makes no host round trip.

Inputs: a series folder, a list of slice paths (one series), one (multi-frame) file, or a list of series
folders (stacked as channels, as MONAI's readers stack a list of images). Everything ``kvdicom.load_series``
refuses is refused with :class:`kvdicom.DicomLoadError` naming the file.

MONAI stays optional: ``import kvdicom`` never imports it; this module subclasses MONAI's ``ImageReader``
where MONAI is installed, and works as a plain reader object where it is not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import kvdicom
from kvdicom import settings
from kvdicom._io import tuning as io_tuning
from kvdicom._series.volume import in_runs

try:  # MONAI optional: LoadImage warns about, but accepts, a reader that is not an ImageReader
    from monai.data.image_reader import ImageReader as _Base
except ImportError:  # pragma: no cover - depends on the environment
    _Base = object

#: Suffixes of DICOM files; a file without a suffix is looked at (the DICM prefix).
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
#: MONAI's flip between LPS and RAS (``monai.data.utils.orientation_ras_lps``).
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _as_paths(data) -> list[Path]:
    if isinstance(data, (str, os.PathLike)):
        return [Path(data)]
    return [Path(p) for p in data]


def _header_geometry(path: str) -> tuple[tuple | None, tuple | None, tuple | None]:
    """(position, orientation, pixel spacing) of one file's top level or shared functional groups."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    shared = ds.get("SharedFunctionalGroupsSequence")
    item = shared[0] if shared else None

    def find(keyword, sequence):
        if keyword in ds:
            return ds[keyword].value
        if item is not None and sequence in item and keyword in item[sequence][0]:
            return item[sequence][0][keyword].value
        return None

    position = find("ImagePositionPatient", "PlanePositionSequence")
    orientation = find("ImageOrientationPatient", "PlaneOrientationSequence")
    spacing = find("PixelSpacing", "PixelMeasuresSequence")
    return tuple(None if v is None else tuple(float(x) for x in v) for v in (position, orientation, spacing))


def lps_affine(position, orientation, pixel_spacing, slice_step) -> np.ndarray:
    """The affine from (column, row, slice, 1) indices, ITKReader's axis order, to LPS mm.

    ``slice_step``: the vector from one slice (frame) centre to the next; None where there is one slice.
    Missing geometry gives the identity, as MONAI's readers do.
    """
    affine = np.eye(4)
    if position is None or orientation is None:
        return affine
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    row_spacing, col_spacing = pixel_spacing if pixel_spacing is not None else (1.0, 1.0)
    affine[:3, 0] = row_cos * col_spacing  # column index: along the rows
    affine[:3, 1] = col_cos * row_spacing  # row index: down the columns
    affine[:3, 2] = slice_step if slice_step is not None else np.cross(row_cos, col_cos)
    affine[:3, 3] = position
    return affine


def series_affine(info: kvdicom.SeriesInfo) -> np.ndarray:
    """:func:`lps_affine` of a loaded series: the slice column is the measured step from the first slice
    centre to the last over the gaps between them, as PydicomReader builds it (ITKReader: the normal times
    the spacing; the same for a series without gantry tilt)."""
    positions = [p for p in info.positions if p is not None]
    step = None
    if len(positions) == len(info.positions) > 1:
        step = (np.asarray(positions[-1]) - np.asarray(positions[0])) / (len(positions) - 1)
    elif info.spacing is not None and info.orientation is not None:
        step = np.cross(info.orientation[:3], info.orientation[3:]) * info.spacing
    first = info.positions[0] if info.positions else None
    return lps_affine(first, info.orientation, info.pixel_spacing, step)


def to_monai_axes(volume, samples: bool, dtype=None):
    """kvdicom's ([slices,] rows, columns[, samples]) as ITKReader's (columns, rows[, slices][, samples]), C-ordered,
    cast to ``dtype`` where given."""
    spatial = volume.ndim - int(samples)
    xp = _array_module(volume)
    if xp is np and spatial == 3:
        return _reversed_by_rows(volume, np.dtype(dtype or volume.dtype))
    if dtype is not None:
        volume = volume.astype(dtype, copy=False)
    axes = tuple(reversed(range(spatial))) + tuple(range(spatial, volume.ndim))
    return xp.ascontiguousarray(volume.transpose(axes))


def _reversed_by_rows(volume: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A host volume (slices, rows, columns[, samples]) as (columns, rows, slices[, samples]) of ``dtype``, one row
    index at a time: that row of every slice is copied (and cast) into a small contiguous block, whose transpose
    is then written out; runs of rows side by side on kvdicom's host threads (NumPy releases the GIL in copies).

    NumPy's copy of the whole transposed view reads one value per slice in turn, a slice apart (1 MiB for 512²
    float32). 256 × 512² on the 2-core CPU dev machine, best of 3: float64 → float32 1166 ms that way, 212 ms
    this way in one thread (int16: 605 → 110 ms), 122 ms in two; two rows a step 199 ms, eight 538 ms.
    """
    slices, rows, columns = volume.shape[:3]
    out = np.empty((columns, rows, slices) + volume.shape[3:], dtype)
    tasks = min(rows, io_tuning.host_threads(), max(1, volume.size // settings.RESCALE_TASK_ELEMENTS))
    in_runs(_reverse_rows, rows, tasks, volume, out)
    return out


def _reverse_rows(volume: np.ndarray, out: np.ndarray, first: int, stop: int) -> None:
    for row in range(first, stop):
        out[:, row] = volume[:, row].astype(out.dtype).swapaxes(0, 1)


def _array_module(array):
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def meta_for(array, spatial_ndim: int, affine_lps: np.ndarray, lps_to_ras: bool, channel_dim,
             tags: dict) -> dict:
    """The meta dict MONAI's readers return for ``array`` (already in MONAI's axis order)."""
    affine = _LPS_TO_RAS @ affine_lps if lps_to_ras else affine_lps.copy()
    meta = dict(tags)
    meta["original_affine"] = affine
    meta["affine"] = affine.copy()
    meta["space"] = "RAS" if lps_to_ras else "LPS"
    meta["spatial_shape"] = np.asarray(array.shape[:spatial_ndim])
    if channel_dim is None:
        meta["original_channel_dim"] = float("nan") if array.ndim == spatial_ndim else -1
    else:
        meta["original_channel_dim"] = channel_dim
    meta["spacing"] = np.sqrt(np.sum(affine[:spatial_ndim, :spatial_ndim] ** 2, axis=0))
    return meta


def _tags(position, orientation, pixel_spacing) -> dict:
    """Image Position / Orientation (Patient) and Pixel Spacing as PydicomReader's pruned meta holds them."""
    out = {}
    for tag, vr, value in (("00200032", "DS", position), ("00200037", "DS", orientation),
                           ("00280030", "DS", pixel_spacing)):
        if value is not None:
            out[tag] = {"vr": vr, "Value": list(value)}
    return out


class KvDicomReader(_Base):
    """A MONAI ``ImageReader`` that loads DICOM with kvdicom, on the GPU (CuPy) or the host (NumPy).

    Args:
        device: ``"cuda"`` (CuPy arrays) or ``"cpu"`` (NumPy arrays).
        rescale: apply Rescale Slope / Intercept (or the Modality LUT), as MONAI's readers do; float32.
        affine_lps_to_ras: RAS affines (MONAI's default), else LPS as DICOM has them.
        series_uid: which series of a folder holding several (``series_name``: the same, ITKReader's name).
        channel_dim: ``original_channel_dim`` to record; None: ``nan`` without samples, -1 for colour.
    """

    def __init__(self, device: str = "cuda", rescale: bool = True, affine_lps_to_ras: bool = True,
                 series_uid: str | None = None, series_name: str | None = None, channel_dim=None, **kwargs):
        super().__init__()
        if kwargs:
            raise TypeError(f"KvDicomReader got unexpected arguments {sorted(kwargs)}")
        self.device = device
        self.rescale = rescale
        self.affine_lps_to_ras = affine_lps_to_ras
        self.series_uid = series_uid or series_name
        self.channel_dim = channel_dim

    def verify_suffix(self, filename: Sequence[os.PathLike] | os.PathLike) -> bool:
        """True for series folders and DICOM files (by suffix, or by the DICM prefix of a file without one)."""
        paths = _as_paths(filename)
        if not paths:
            return False
        for path in paths:
            if path.is_dir():
                if not any(_is_dicom_file(p) for p in path.iterdir() if p.is_file()):
                    return False
            elif not (path.is_file() and _is_dicom_file(path)):
                return False
        return True

    def read(self, data, **kwargs):
        """Load ``data``: one image (series or file), or a list of images for a list of folders."""
        paths = _as_paths(data)
        if len(paths) > 1 and all(p.is_dir() for p in paths):
            return [self._read_one(p) for p in paths]
        if len(paths) > 1:
            return self._read_one(paths)
        return self._read_one(paths[0])

    def _read_one(self, source):
        """(array in kvdicom's order, samples per pixel, SeriesInfo or None, geometry of a single file or None)."""
        if isinstance(source, list) or source.is_dir():
            series = [str(p) for p in source] if isinstance(source, list) else source
            volume, info = kvdicom.load_series(series, self.device, rescale=self.rescale, series_uid=self.series_uid)
            return volume, info.layouts[0].samples_per_pixel, info, None
        layout = kvdicom.inspect(source)
        array = kvdicom.load(source, self.device, rescale=self.rescale)
        return array, layout.samples_per_pixel, None, _header_geometry(str(source))

    def _dtype(self, array):
        """MONAI's readers return rescaled data as float32 (cast as the axes are reordered: one pass, not two)."""
        return np.float32 if self.rescale and array.dtype == np.float64 else None

    def get_data(self, img) -> tuple:
        """(array in MONAI's axis order, meta), a list of images stacked at a new first (channel) axis."""
        images = img if isinstance(img, list) else [img]
        arrays, metas = [], []
        for array, samples_per_pixel, info, single in images:
            if info is not None:
                affine = series_affine(info)
                tags = _tags(info.positions[0], info.orientation, info.pixel_spacing)
            else:
                position, orientation, pixel_spacing = single
                affine = lps_affine(position, orientation, pixel_spacing, None)
                tags = _tags(position, orientation, pixel_spacing)
            samples = samples_per_pixel > 1
            monai_array = to_monai_axes(array, samples, self._dtype(array))
            arrays.append(monai_array)
            metas.append(meta_for(monai_array, array.ndim - int(samples), affine, self.affine_lps_to_ras,
                                  self.channel_dim, tags))
        meta = metas[0]
        if len(arrays) == 1:
            return arrays[0], meta
        for other in metas[1:]:
            if not np.allclose(other["affine"], meta["affine"]) or not np.array_equal(other["spatial_shape"],
                                                                                      meta["spatial_shape"]):
                raise kvdicom.DicomLoadError(str(images[0][2].paths[0]), "the series differ in affine or shape: "
                                             "they cannot be stacked as channels")
        meta["original_channel_dim"] = 0
        return _array_module(arrays[0]).stack(arrays, axis=0), meta
