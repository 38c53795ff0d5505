"""File identity, bounded reads, host and device reads, worker processes.

Internal: the public API is the top-level ``kvdicom``.
"""
