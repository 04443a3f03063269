"""Study 05: multi-label few-shot aspect category detection (Hu et al., ACL 2021, Proto-AWATT).

Study shape: ``config`` (:class:`~epi_utils.acd.config.ACDConfig`), ``study`` (the design, typed
records), ``summary`` (tables, paired comparisons and verdicts built on ``workbench.stats.compare``),
``figures``, ``rehearsal`` (the gpu profile's CPU rehearsal). Concepts: ``data`` (FewAsp loader,
validation, fetch), ``episodes`` (N-way K-shot multi-label sampler), ``embeddings`` (GloVe 50d
vocabulary and token ids), ``encoders`` (CNN, BERT-family, token banks), ``models`` (ProtoNet,
Proto-AWATT), ``threshold`` (static threshold, REINFORCE policy), ``training`` (episodic training
with early stopping and the joint policy, scoring), ``metrics`` (episode AUC / macro-F1).
"""
