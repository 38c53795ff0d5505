"""The loaders kvdicom is measured against, each as its users would call it."""

from __future__ import annotations

import pydicom


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
