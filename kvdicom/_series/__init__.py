"""Series of slices: headers, keys, order, staging, decode, the volume.

Internal: the public API is the top-level ``kvdicom``.
"""
