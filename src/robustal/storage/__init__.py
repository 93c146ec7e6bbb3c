"""Where results live: the SQLite results store of a run or study (:mod:`~robustal.storage.store`; what its tables
hold, :mod:`~robustal.storage.schema`), atomic writes and weights-only loads (:mod:`~robustal.storage.outputs`), and
the machine and library versions recorded with every result (:mod:`~robustal.storage.provenance`). The lowest layer
above ``robustal.errors``: it imports no other robustal package. Modules are imported by their own path (``from
robustal.storage.store import Store``; the public ``robustal.store`` re-exports it), so importing the package costs
nothing.
"""
