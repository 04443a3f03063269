"""Study 05: multi-label few-shot aspect category detection (Hu et al., ACL 2021, Proto-AWATT).

Modules: ``data`` (FewAsp loader, validation, fetch), ``episodes`` (N-way K-shot multi-label
sampler), ``embeddings`` (GloVe 50d vocabulary and token ids), ``encoders`` (CNN, MiniLM, token
banks), ``models`` (ProtoNet, Proto-AWATT), ``threshold`` (static threshold, REINFORCE policy),
``metrics`` (episode AUC / macro-F1), ``training`` (episodic train/evaluate), ``summary``
(tables over seeds), ``figures`` (the notebook's plots).
"""
