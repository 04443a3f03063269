"""epi_utils: the library behind the five studies of this workbench.

Modules (one concept each): ``runs`` (seeds, devices, run folders, provenance),
``report`` (papermill execution, rendering, index, sweeps), ``cli`` (the ``epi`` command),
``plots`` (figure style, ``save_figure``), ``stats`` (bootstrap confidence intervals),
``continual`` (accuracy-matrix metrics), and the study packages ``lm``, ``data``,
``events`` and ``acd``.
"""

__version__ = "0.1.0"
