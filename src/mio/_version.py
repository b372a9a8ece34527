"""The version of mio, in one place (read by setuptools and by ``mio --version``)."""

__version__ = "0.1.0"

#: The distribution name on the package index (``pip install mio-mux``). The import name
#: stays ``mio``; the index name ``mio`` belongs to an unrelated project.
DISTRIBUTION = "mio-mux"
