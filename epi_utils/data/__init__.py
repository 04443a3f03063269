"""Data: the synthetic knowledge world (``world``) and real-data loaders."""
