"""The distribution of the edge-type site, shared by model and guide.

``EdgeTypes`` is a relaxed one-hot categorical (Concrete / Gumbel-softmax) over the K edge
types of each ordered pair. Three details make the two objectives honest:

- The NRI objective needs KL(q || p) between the *categorical* probabilities, not between
  relaxed densities; it is registered below, so ``TraceMeanField_ELBO`` uses it.
- With ``hard=True`` a sample is the one-hot argmax with straight-through gradients. Its
  density is evaluated at the soft sample it came from (kept on the tensor), in the model
  as in the guide, so a hard sample never meets log(0).
- Relaxed densities are evaluated with the sample clamped away from exact 0, so an
  underflowing coordinate gives a large finite log-density instead of NaN.
"""

from __future__ import annotations

import torch
from pyro.distributions import RelaxedOneHotCategorical
from pyro.distributions.relaxed_straight_through import QuantizeCategorical
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.kl import register_kl
from torch.distributions.utils import clamp_probs

from nri_pyro.nn.parallel import local_rows


class EdgeTypes(RelaxedOneHotCategorical):
    """Relaxed one-hot edge types: batch [..., E], event [K].

    Parameters as :class:`pyro.distributions.RelaxedOneHotCategorical` (``temperature``
    and ``probs`` or ``logits``); ``hard=True`` returns straight-through one-hot samples.
    """

    arg_constraints = {  # noqa: RUF012 - torch's class attribute
        "probs": constraints.simplex,
        "logits": constraints.real_vector,
    }

    def __init__(
        self,
        temperature: Tensor | float,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        hard: bool = False,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(temperature, Tensor):
            ref = probs if probs is not None else logits
            temperature = torch.tensor(float(temperature), device=ref.device, dtype=ref.dtype)
        self.hard = hard
        super().__init__(temperature, probs=probs, logits=logits, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(EdgeTypes, _instance)
        new.hard = self.hard
        return super().expand(batch_shape, _instance=new)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        # torch's Gumbel-softmax sampler, except that in a data-parallel training step the
        # noise of the per-trajectory rows is drawn for the global batch
        # (nri_pyro.nn.parallel.local_rows), so W processes sample what one would.
        shape = self._extended_shape(sample_shape)
        logits = self.logits

        def uniform(size: torch.Size) -> Tensor:
            return torch.rand(size, dtype=logits.dtype, device=logits.device)

        u = clamp_probs(uniform(shape) if len(sample_shape) else local_rows(shape, uniform))
        scores = (logits - (-u.log()).log()) / self.temperature
        # softmax normalises by division, so the sum is 1 to a few ulps; exp(scores -
        # logsumexp) carries the logsumexp's rounding into it, and a float32 training run
        # once drew a sample that failed log_prob's simplex check that way.
        soft = torch.softmax(scores, dim=-1)
        return QuantizeCategorical.apply(soft) if self.hard else soft

    def log_prob(self, value: Tensor) -> Tensor:
        soft = getattr(value, "_unquantize", value)
        tiny = torch.finfo(soft.dtype).tiny
        return super().log_prob(soft.clamp(min=tiny))


@register_kl(EdgeTypes, EdgeTypes)
def edge_types_kl(q: EdgeTypes, p: EdgeTypes) -> Tensor:
    """KL between the categorical probabilities, as NRI computes it: [..., E] (registered
    with torch's ``kl_divergence``; the fast path calls it directly, which torch.compile
    traces where the registry's dispatch would split the graph)."""
    log_q = torch.log_softmax(q.logits, dim=-1)
    log_p = torch.log_softmax(p.logits, dim=-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)
