"""The library version, in a module of its own.

The model format records it (``library_version`` in ``model.json``);
``_persist`` reads it from here rather than from the package, which it
belongs to and which imports it.
"""

__version__ = "0.1.0"
