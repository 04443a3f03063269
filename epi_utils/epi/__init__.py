"""Studies 01-02: parameter importance (``importance``, ``importance_drift``, ``importance_snapshots``),
isolation policies and EPI (``isolation``, ``isolation_callback`` for the Hugging Face Trainer,
``isolation_hf``), the study runners (``isolation_study``), continual-learning metrics
(``continual``) and the distributed check (``distributed``)."""
