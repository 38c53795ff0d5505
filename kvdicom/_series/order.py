"""Which files make one volume, and in what order: GDCM's and highdicom's rules.

Refuse what cannot be one volume (several series, slices that cannot stack,
two slices at one position, no way to order), order by Image Position
(Patient) on the normal of Image Orientation (Patient) else by Instance
Number, and work out spacing, gantry tilt and the LPS affine.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from kvdicom._series.headers import Header
from kvdicom.errors import DicomLoadError

#: highdicom's tolerances: slice gaps equal within this (mm) are uniform, and
#: the stack direction is the normal when |cos - 1| is below it.
SPACING_TOLERANCE = 1e-4
#: Positions closer than this along the normal (mm) are the same position.
DUPLICATE_TOLERANCE = 1e-4
#: Positions farther than this from the origin (mm; a patient is metres at most) cannot place a slice:
#: ±1.7e308 overflowed the distances to ±inf and NaN.
MAX_POSITION_MM = 1e9
#: The two cosine triples span a plane where their cross product's squared length is above this (the slice's
#: normal; 1 for unit cosines at right angles). :func:`usable_geometry` and :func:`_usable_arrays` both test it.
MIN_NORMAL_SQUARED = 0.25


def _names(paths, limit: int = 5) -> str:
    paths = list(paths)
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def refuse_errors(headers: list[Header]) -> None:
    bad = [h for h in headers if h.error is not None]
    if bad:
        others = f"; also refused: {_names(h.path for h in bad[1:])}" if len(bad) > 1 else ""
        raise DicomLoadError(bad[0].path, f"{bad[0].error}{others}")


def pick_series(headers: list[Header], series_uid: str | None, source: str) -> list[Header]:
    if not headers:
        raise DicomLoadError(source, "no DICOM image files (every file was skipped)")
    groups: dict[str | None, list[Header]] = {}
    for h in headers:
        groups.setdefault(h.keys.series_uid, []).append(h)
    if series_uid is not None:
        if series_uid not in groups:
            raise DicomLoadError(source, f"no file has Series Instance UID {series_uid}; "
                                         f"found {sorted(map(str, groups))}")
        return groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(f"{uid} ({len(g)} files, e.g. {g[0].path})" for uid, g in groups.items())
        raise DicomLoadError(source, f"{len(groups)} series in one load, pass series_uid= to pick one: {listing}")
    return headers


def check_stackable(headers: list[Header]) -> None:
    """Refuse multi-frame files and slices whose arrays cannot stack."""
    multi = [h.path for h in headers if h.layout.number_of_frames > 1]
    if multi:
        raise DicomLoadError(multi[0], f"multi-frame file in a series of slices (also: {_names(multi[1:]) or 'none'}); "
                                       "load it with kvdicom.load")
    first = headers[0]
    # one tuple a slice, compared whole; the attribute that differs is looked for only where one does (five
    # passes of a getter each took 0.11 of ``order``'s 0.56 ms for 256 CT slices, 2-core CPU dev machine)
    want = _stack_key(first.layout)
    if all(_stack_key(h.layout) == want for h in headers):
        return
    for what, name in _STACKED:
        odd = [h for h in headers if getattr(h.layout, name) != getattr(first.layout, name)]
        if odd:
            raise DicomLoadError(odd[0].path, f"{what} {getattr(odd[0].layout, name)} differs from "
                                              f"{getattr(first.layout, name)} in {first.path}; slices of one volume "
                                              "must match")


#: What slices of one volume share, as the refusal names it and as the layout holds it.
_STACKED = (("rows", "rows"), ("columns", "columns"), ("samples per pixel", "samples_per_pixel"),
            ("dtype", "dtype"), ("shape", "shape"))
_stack_key = operator.attrgetter(*(name for _, name in _STACKED))


def _normal(orientation) -> np.ndarray:
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    return np.cross(row, col)


def usable_geometry(keys) -> bool:
    """Whether a slice's Image Position and Orientation (Patient) can place it: finite, within
    :data:`MAX_POSITION_MM` (so distances cannot overflow), and two cosine triples that span a plane.

    Plain float arithmetic, not NumPy: it runs for every slice, and np.cross made a 16-slice load 20% slower."""
    if keys.position is None or keys.orientation is None:
        return False
    if not all(abs(v) <= MAX_POSITION_MM for v in keys.position):  # False for NaN and ±inf too
        return False
    rx, ry, rz, cx, cy, cz = keys.orientation
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    return nx * nx + ny * ny + nz * nz > MIN_NORMAL_SQUARED  # NaN compares False


def _usable_arrays(keys) -> tuple[np.ndarray, np.ndarray] | None:
    """Every slice's position (n, 3) and orientation (n, 6) as arrays where every slice passes
    :func:`usable_geometry`, else None: the same tests on all slices at once (256 CT slices: 0.10 ms one
    slice at a time, 2-core CPU dev machine)."""
    positions = [k.position for k in keys]
    orientations = [k.orientation for k in keys]
    if None in positions or None in orientations:
        return None
    position = np.array(positions, dtype=float)
    orientation = np.array(orientations, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        normal = np.cross(orientation[:, :3], orientation[:, 3:])
        usable = (np.abs(position) <= MAX_POSITION_MM).all(1) & ((normal * normal).sum(1) > MIN_NORMAL_SQUARED)
    return (position, orientation) if usable.all() else None


def order(headers: list[Header]) -> tuple[list[Header], str, np.ndarray | None]:
    """Slices in order, the rule used, and their distances along the normal (position rule only).

    The position rule needs every slice's geometry usable (:func:`usable_geometry`); where one is NaN,
    infinite, absurdly far or a zero orientation, the Instance Number rule orders them (``geometry`` then
    reports why), or the slices are refused naming the rule that failed.
    """
    keys = [h.keys for h in headers]
    arrays = _usable_arrays(keys)
    if arrays is not None:
        positions, orientations = arrays
        orientation = keys[0].orientation
        # np.allclose of each slice's six cosines against the first's, as one array test: ``order`` of 256
        # CT slices took 13.1 ms with one np.allclose per slice, 0.3 ms so (2-core CPU dev machine)
        same = np.isclose(orientations, orientations[0]).all(1)
        if not same.all():
            odd = headers[int(np.flatnonzero(~same)[0])]
            raise DicomLoadError(odd.path, f"Image Orientation (Patient) {odd.keys.orientation} differs from "
                                           f"{orientation} in {headers[0].path}")
        distances = positions @ _normal(orientation)
        order = np.argsort(distances, kind="stable")
        ordered = [headers[i] for i in order]
        distances = distances[order]
        same = np.flatnonzero(np.diff(distances) <= DUPLICATE_TOLERANCE)
        if same.size:
            a, b = ordered[same[0]], ordered[same[0] + 1]
            raise DicomLoadError(a.path, f"same slice position as {b.path} ({a.keys.position}); several images per "
                                         "position (echoes, phases, times) are not one volume")
        return ordered, "position", distances
    if all(k.instance_number is not None for k in keys):
        ordered = sorted(headers, key=lambda h: h.keys.instance_number)
        for a, b in zip(ordered, ordered[1:]):
            if a.keys.instance_number == b.keys.instance_number:
                raise DicomLoadError(a.path, f"same Instance Number {a.keys.instance_number} as {b.path}, and no "
                                             "Image Position/Orientation to order them by")
        return ordered, "instance_number", None
    if len(headers) == 1:
        return headers, "none", None
    missing = [h.path for h in headers if h.keys.instance_number is None]
    unusable = [h.path for h in headers if not usable_geometry(h.keys)]
    raise DicomLoadError(missing[0], "cannot order the slices: Instance Number is missing (also in "
                                     f"{_names(missing[1:]) or 'no other file'}) and Image Position/Orientation "
                                     f"(Patient) is missing, non-finite or not a plane in {_names(unusable)}")


def geometry(ordered: list[Header], rule: str, distances):
    """(spacing, irregularities, pixel spacing, affine)."""
    irregular = []
    first = ordered[0].keys
    # the position rule was taken only where every slice's geometry was usable (:func:`order`)
    unusable = [] if rule == "position" else [h for h in ordered
                                              if not usable_geometry(h.keys) and h.keys.position is not None]
    if unusable:
        irregular.append(f"Image Position/Orientation (Patient) not usable (non-finite, beyond {MAX_POSITION_MM:g} "
                         f"mm or not a plane) in {_names(h.path for h in unusable)}: ordered by {rule}, no affine")
    spacing = None
    if rule == "position" and len(ordered) > 1:
        gaps = np.diff(distances)
        spacing = float(gaps.mean())
        if not np.isclose(spacing, gaps, atol=SPACING_TOLERANCE).all():
            irregular.append(f"non-uniform spacing: slice gaps from {gaps.min():.6g} to {gaps.max():.6g} mm "
                             f"(mean {spacing:.6g})")
        span = np.asarray(ordered[-1].keys.position) - np.asarray(first.position)
        cosine = float(_normal(first.orientation) @ (span / np.linalg.norm(span)))
        if abs(cosine - 1.0) >= SPACING_TOLERANCE:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cosine))))
            irregular.append(f"gantry tilt: slices are stacked {angle:.3g} degrees off the orientation normal")
    spacings = {h.keys.pixel_spacing for h in ordered}
    if len(spacings) > 1:
        irregular.append(f"differing pixel spacing: {sorted(spacings, key=str)}")
    affine = None
    if rule in ("position", "none") and usable_geometry(first) and first.pixel_spacing:
        step = spacing if spacing is not None else (first.slice_thickness or 1.0)
        row_cos, col_cos = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
        affine = np.eye(4)
        # slice index: the measured step from the first slice centre to the last over the gaps between them, so
        # every slice centre maps to its own position, a gantry-tilted stack's too (the normal times the
        # spacing put its last slice up to 48 mm off); the normal times the thickness for a single slice
        if rule == "position" and len(ordered) > 1:
            affine[:3, 0] = (np.asarray(ordered[-1].keys.position) - first.position) / (len(ordered) - 1)
        else:
            affine[:3, 0] = _normal(first.orientation) * step
        affine[:3, 1] = col_cos * first.pixel_spacing[0]  # row index: down the columns
        affine[:3, 2] = row_cos * first.pixel_spacing[1]  # column index: along the rows
        affine[:3, 3] = first.position
    return spacing, tuple(irregular), first.pixel_spacing, affine
