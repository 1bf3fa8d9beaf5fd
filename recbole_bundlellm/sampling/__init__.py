"""Sampling: which training sessions' knowledge a student gets, and how sets are combined."""
