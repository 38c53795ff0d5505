"""The cold series' ceiling: every file of a series read whole from the disk, concurrently, into one buffer.

A :class:`bench.ceilings.SeriesRead` (same pool, same one host buffer, on ``cuda`` the same span-by-span
copies to the device, overlapping the reads) of whole files, with O_DIRECT: a cold loader must read each header from the
disk too, and O_DIRECT reads are aligned, so each file gets a slot of its size rounded up to
:data:`~bench.ceilings.DIRECT_IO_ALIGN` (the read stops short at the file's end). Where O_DIRECT is refused
(tmpfs, some overlay file systems) every file is read buffered instead, after the same verified drop, as
:class:`bench.ceilings.DiskRead` does; ``direct`` says which ran.
"""

from __future__ import annotations

import os

from bench.ceilings import DIRECT_IO_ALIGN, SeriesRead, drop_page_cache, time_cold
from dgbench.schema import bench_extra, ceiling_loader, series_ceiling_for


class SeriesDiskRead(SeriesRead):
    """Read every file of ``paths`` whole, on a thread pool, into one host buffer (``device="cuda"``: pinned,
    copied to the device span by span as the reads finish). Call :func:`bench.ceilings.drop_page_cache` on each
    file before a round."""

    short = "early"

    def __init__(self, paths, device: str = "cpu", direct: bool = True):
        self.paths = [str(p) for p in paths]
        super().__init__([(p, 0, os.stat(p).st_size) for p in self.paths], device, align=DIRECT_IO_ALIGN)
        self.direct = direct and self._direct_io_works()
        self.flags = os.O_RDONLY | (os.O_DIRECT if self.direct else 0)

    def _direct_io_works(self) -> bool:
        """Whether the first file opens and reads with O_DIRECT (the series' files share one file system)."""
        try:
            self._read(0, os.O_RDONLY | os.O_DIRECT)
            return True
        except (OSError, AttributeError):  # EINVAL on tmpfs and some overlays; no O_DIRECT on this OS
            return False

    def file_bytes(self, i: int) -> bytes:
        """File ``i``'s bytes as the last round read them."""
        return self.host[self.starts[i] : self.starts[i] + self.ranges[i][2]].tobytes()


def time_disk_ceiling(benchmark, case: str, paths, pixel_bytes: int, device: str, direct: bool = True,
                      **extra) -> None:
    """``ceiling:series_disk_{read,h2d}_{direct,buffered}`` of the files ``paths``: :class:`SeriesDiskRead`,
    checked once to have read every file's own bytes, then timed with every file dropped before each round
    (:func:`~bench.ceilings.time_cold`). Held against ``pixel_bytes`` (the volume's), as ``disk_read`` is.
    ``direct=False``: through the page cache, as a loader's reads go (a loader is held against the fastest)."""
    read = SeriesDiskRead(paths, device, direct=direct)
    try:
        for path in paths:
            drop_page_cache(path)
        assert read() == read.nbytes
        for i, path in enumerate(read.paths):
            with open(path, "rb") as f:
                assert read.file_bytes(i) == f.read(), f"the ceiling read other bytes than {path}"
        name = series_ceiling_for(device, "cold") + ("_direct" if read.direct else "_buffered")
        benchmark.extra_info.update(bench_extra(case, ceiling_loader(name), device, read.nbytes, pixel_bytes, "cold",
                                                direct_io=read.direct, bytes_read=read.nbytes, **extra))
        time_cold(benchmark, paths, read)
    finally:
        read.close()
