"""The version of mio, in one place (read by setuptools and by ``mio --version``)."""

__version__ = "0.1.0"
