"""epi_utils: the library behind the five studies of this workbench.

Infrastructure: ``runs`` (seeds, devices, run folders, provenance, atomic metrics),
``notebook_params`` (parameters cell and profiles, validation), ``report`` (papermill execution,
rendering, index, publish), ``sweep`` (grids over seeds, summaries with CIs), ``cli`` (the ``epi``
command), ``datasets`` (data registry, verified downloads), ``environment``, ``plots``
(``save_figure``), ``stats`` (bootstrap confidence intervals), ``continual`` (ACC/BWT/FWT/forgetting).

Studies: ``data.world`` + ``lm`` (language-model testbed, studies 01-03); ``importance*`` and
``isolation*`` (importance drift and EPI, studies 01-02); ``ilp`` (incomplete learning, study 03);
``events`` (document-level event extraction, study 04); ``acd`` (few-shot aspect category
detection, study 05).
"""

__version__ = "0.1.0"
