"""epi_utils: the library behind the five studies of this workbench.

Layers (data flows one way: data -> model/training -> records on disk -> analysis and figures):

- ``workbench``: the platform (cli, runs, params, report, sweep, stats, plots, datasets, environment);
- ``data``: the synthetic knowledge world with planted causes and its real-facts variant;
- ``lm``: the language-model testbed (models, SFT engine with hooks, evaluation);
- one package per study family: ``epi`` (importance drift and EPI, studies 01-02), ``ilp``
  (incomplete learning, study 03), ``events`` (document-level event extraction, study 04), ``acd``
  (few-shot aspect category detection, study 05).
"""

__version__ = "0.1.0"
