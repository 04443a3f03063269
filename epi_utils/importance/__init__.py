"""Parameter importance (library layer).

``estimators``: importance scores and the EMA tracker (|theta g|, Fisher, sensitivity with
uncertainty as in AdaLoRA); ``drift``: overlap and drift statistics between critical sets
(Jaccard, turnover, rank-biased overlap); ``checkpoint``: importance measured at fixed
checkpoints from disjoint data halves, the measurement of study 01.
"""
