"""dgbench: the harness of dicom-gpu-bench (pytest plugin, machine id, baselines, derived numbers, reports).

The loader (``kvdicom``) imports nothing from here; this package sits above it.
"""
