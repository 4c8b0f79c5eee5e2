"""numba CPU kernels on numpy arrays (compiled lazily on first call, ``cache=True``)."""
