"""The platform every study shares: ``cli`` (the ``epi`` command), ``runs`` (seeds, devices, run
folders, provenance, atomic metrics.json), ``params`` (a notebook's parameters cell and profiles, on
papermill's ``inspect_notebook``, with strict checks), ``report`` (papermill execution, rendering,
index, publish), ``sweep`` (grids over seeds), ``stats`` (t-intervals, bootstrap over many units,
paired ``compare``), ``plots`` (one style, ``save_figure``), ``datasets`` (data registry, verified
downloads), ``environment``."""
