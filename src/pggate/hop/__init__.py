"""The backend hop's decisions, sans-IO: which host and encryption to try next (``plan``).

The I/O that carries them out lives in :mod:`pggate.server.link`.
"""
