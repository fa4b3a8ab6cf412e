"""The bundled demo: a tiny HTTP app (:mod:`rolling.demo.app`) and ``rolling demo``.

.. versionadded:: 0.1.0
"""
