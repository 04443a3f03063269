"""Isolation policies and the compact EPI state (library layer).

``policies``: the base :class:`~epi_utils.isolation.policies.IsolationPolicy` (per-task critical sets
-> owner map -> per-step masks), full SFT, random and static masks, EPI and its variants;
``stage_policies``: masks taken at a stage's end and EWC; ``state``: bit-packed critical sets and the
owner map; ``callback``: the Hugging Face ``Trainer`` callback; ``distributed``: the torchrun check.
Every concrete policy registers itself by ``name`` when its module is imported; importing this
package imports both policy modules, so :func:`make_policy` knows all of them.
"""
from epi_utils.isolation import policies, stage_policies  # noqa: F401  (registers every policy)
from epi_utils.isolation.policies import REGISTRY, IsolationPolicy, make_policy, policy_names

__all__ = ["REGISTRY", "IsolationPolicy", "make_policy", "policy_names"]
