"""Study 05: multi-label few-shot aspect category detection (Hu et al., ACL 2021, Proto-AWATT).

The study contract (``epi_utils.workbench.contract``): :class:`Config` (``config``), :func:`run_study`
and its :class:`Result` (``study``: the design, typed records, frames and metrics), :func:`rehearse`
(``rehearsal``: the gpu profile's code path at toy scale on the CPU with the full-scale estimate),
``summary`` (tables, paired comparisons and verdicts built on ``workbench.stats``), ``figures``
(functions returning figures). Concepts: ``data`` (FewAsp loader, validation, fetch), ``episodes``
(N-way K-shot multi-label sampler), ``embeddings`` (GloVe 50d vocabulary and token ids),
``encoders`` (CNN, BERT-family, token banks), ``models`` (ProtoNet, Proto-AWATT), ``threshold``
(static threshold, REINFORCE policy), ``training`` (data loading, episodic training with early
stopping and the joint policy, scoring), ``metrics`` (episode AUC / macro-F1).
"""
from epi_utils.acd.config import Config
from epi_utils.acd.rehearsal import rehearse
from epi_utils.acd.study import Result, run_study

__all__ = ["Config", "Result", "rehearse", "run_study"]
