"""The loaders kvdicom is measured against, each as its users would call it."""

from __future__ import annotations

import pydicom


def synced(cupy, load, *args, **kwargs):
    """``load(*args, **kwargs)`` followed by a device synchronize, as one timed call (GPU work is asynchronous)."""

    def run():
        out = load(*args, **kwargs)
        cupy.cuda.Device().synchronize()
        return out

    return run


def pydicom_cpu(path):
    """pydicom's own decode on the host: the reference and the usual baseline."""
    return pydicom.dcmread(path).pixel_array


def pydicom_to_cupy(path):
    """pydicom on the host, then one ``cupy.asarray`` copy to the GPU."""
    import cupy

    return cupy.asarray(pydicom.dcmread(path).pixel_array)


#: The seed notebook ran KvikIO with its default thread pool of one thread.
SEED_KVIKIO_THREADS = 1


def seed_notebook_gpu(path):
    """The loader of the KvikIO DICOM notebook that started this project, unchanged in behaviour.

    It trusts the header: no transfer syntax check, no Bits Stored handling,
    always a (frames, rows, columns) shape. Benchmarks record whether its
    output matches pydicom for each case rather than assuming it does.
    """
    import cupy
    import kvikio

    ds = pydicom.dcmread(path, defer_size="100 KB")
    rows, columns = ds.Rows, ds.Columns
    frames = getattr(ds, "NumberOfFrames", 1)
    signed = ds.PixelRepresentation == 1
    dtypes = {8: (cupy.uint8, cupy.int8), 16: (cupy.uint16, cupy.int16), 32: (cupy.uint32, cupy.int32)}
    if ds.BitsAllocated not in dtypes:
        raise ValueError("Unsupported BitsAllocated value")
    dtype = dtypes[ds.BitsAllocated][signed]
    nbytes = rows * columns * ds.SamplesPerPixel * frames * ds.BitsAllocated // 8
    offset = ds.get_item(0x7FE00010, keep_deferred=True).value_tell
    with kvikio.CuFile(path, "r") as f:
        buffer = cupy.empty(nbytes, dtype=cupy.int8)
        f.read(buffer, nbytes, offset)
    return buffer.view(dtype).reshape((frames, rows, columns))


def monai_reader(to_gpu: bool = True):
    """MONAI's ``PydicomReader`` as a MONAI pipeline builds it (raises ImportError without MONAI)."""
    from monai.data import PydicomReader

    return PydicomReader(to_gpu=to_gpu)


def monai_gpu(reader, path):
    """MONAI ``PydicomReader(to_gpu=True)``: read, then ``get_data`` (its own array layout and rescale)."""
    image = reader.read(str(path))
    data, _meta = reader.get_data(image)
    return data


# --- dicomsdl (C++; a peer only: it can abort the process natively) ------------------------------


def dicomsdl_cpu(path):
    """dicomsdl's stored values (``storedvalue=True``: no rescale, like ``pixel_array``), all frames.

    Frames after the first are decoded into one preallocated array (``copyFrameData``), so compressed and
    colour files take the same path as native grey ones.
    """
    import dicomsdl
    import numpy as np

    ds = dicomsdl.open(str(path))
    frames = ds.getPixelDataInfo()["NumberOfFrames"] or 1
    first = ds.pixelData(0, storedvalue=True)
    if frames == 1:
        return first
    out = np.empty((frames, *first.shape), dtype=first.dtype)
    out[0] = first
    for i in range(1, frames):
        ds.copyFrameData(i, out[i])
    return out


def dicomsdl_to_cupy(path):
    """dicomsdl on the host, then one ``cupy.asarray`` copy to the GPU."""
    import cupy

    return cupy.asarray(dicomsdl_cpu(path))


_DICOMSDL_PROBES: dict[tuple[str, ...], str | None] = {}


def dicomsdl_crash(paths) -> str | None:
    """Why dicomsdl cannot be benchmarked on ``paths``, or ``None`` if a child process read them all.

    dicomsdl aborted the whole process (a native double free) on a 16-bit RGB
    RLE file, so it first reads exactly these files in a subprocess: a crash
    there becomes a skip reason instead of the end of the session.
    """
    import subprocess
    import sys

    key = tuple(str(p) for p in paths)
    if key not in _DICOMSDL_PROBES:
        script = ("import sys\nfrom bench.peers import dicomsdl_cpu\n"
                  "for p in sys.stdin.read().split('\\0'):\n    dicomsdl_cpu(p)\n")
        root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
        try:
            child = subprocess.run([sys.executable, "-c", script], input="\0".join(key), text=True, cwd=root,
                                   capture_output=True, timeout=600)
        except subprocess.TimeoutExpired:
            _DICOMSDL_PROBES[key] = "dicomsdl did not finish reading these files within 600 s in a child process"
        else:
            if child.returncode == 0:
                _DICOMSDL_PROBES[key] = None
            else:
                last = (child.stderr.strip().splitlines() or ["no output"])[-1]
                how = f"signal {-child.returncode}" if child.returncode < 0 else f"exit {child.returncode}"
                _DICOMSDL_PROBES[key] = f"dicomsdl failed in a child process ({how}): {last}"
    return _DICOMSDL_PROBES[key]


# --- series: a folder of single-frame files ------------------------------------------------------


def series_files(folder) -> list:
    """The files of a series folder, in directory-listing order (what a user's loop gets)."""
    import os
    from pathlib import Path

    return [Path(folder) / name for name in sorted(os.listdir(folder))]


def slice_sort_key(position, orientation, instance_number):
    """GDCM's order: Image Position projected on the normal of Image Orientation; else Instance Number."""
    if position is None or orientation is None:
        return (1, float(instance_number or 0))
    r, c = [float(v) for v in orientation[:3]], [float(v) for v in orientation[3:]]
    n = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return (0, sum(float(p) * q for p, q in zip(position, n)))


def pydicom_series(folder, rescale: bool = False):
    """pydicom loop over the folder, sort by position on the normal, ``np.stack``: the reference.

    With ``rescale=True`` each slice gets its own modality LUT (``apply_modality_lut``).
    """
    import numpy as np
    from pydicom.pixels import apply_modality_lut

    slices = []
    for path in series_files(folder):
        ds = pydicom.dcmread(path)
        arr = apply_modality_lut(ds.pixel_array, ds) if rescale else ds.pixel_array
        key = slice_sort_key(ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient"),
                             ds.get("InstanceNumber"))
        slices.append((key, arr))
    slices.sort(key=lambda s: s[0])
    return np.stack([arr for _, arr in slices])


def pydicom_series_to_cupy(folder, rescale: bool = False):
    import cupy

    return cupy.asarray(pydicom_series(folder, rescale))


def dicomsdl_series(folder):
    """dicomsdl loop (``pixelData(storedvalue=True)``), same sort, ``np.stack``."""
    import dicomsdl
    import numpy as np

    slices = []
    for path in series_files(folder):
        ds = dicomsdl.open(str(path))
        key = slice_sort_key(ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.InstanceNumber)
        slices.append((key, ds.pixelData(storedvalue=True)))
    slices.sort(key=lambda s: s[0])
    return np.stack([arr for _, arr in slices])


def dicomsdl_series_to_cupy(folder):
    import cupy

    return cupy.asarray(dicomsdl_series(folder))


def sitk_series(folder):
    """SimpleITK ``ImageSeriesReader`` (GDCM's sort; it applies the rescale), as a NumPy (z, y, x) array."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def sitk_series_to_cupy(folder):
    import cupy

    return cupy.asarray(sitk_series(folder))


def monai_series_loader():
    """MONAI ``LoadImage(reader="PydicomReader")`` as a pipeline builds it (ImportError without MONAI)."""
    from monai.transforms import LoadImage

    return LoadImage(reader="PydicomReader", image_only=True)


def kvdicom_load_series():
    """``kvdicom.load_series`` (issue 8), or ImportError naming what is missing."""
    import kvdicom

    load_series = getattr(kvdicom, "load_series", None)
    if load_series is None:
        raise ImportError("kvdicom.load_series is not in this kvdicom yet")
    return load_series


# --- what a series benchmark skips on, with the reason ----------------------------------------------


def load_series_or_skip():
    """:func:`kvdicom_load_series`, or a skip naming what is missing."""
    import pytest

    try:
        return kvdicom_load_series()
    except ImportError as exc:
        pytest.skip(str(exc))


def skip_unless_dicomsdl_reads_series(folder) -> None:
    """Skip unless dicomsdl is installed and read every file of ``folder`` in a child process."""
    import pytest

    try:
        import dicomsdl  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"dicomsdl is not installed ({exc})")
    crash = dicomsdl_crash(series_files(folder))
    if crash:
        pytest.skip(crash)
