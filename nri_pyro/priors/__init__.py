"""Edge priors and graph structure: the swappable part of the model, chosen in the spec.

Two sections of a model spec describe what is believed about the graph before seeing data:

``prior:`` the distribution of each edge's type, a small class registered under a name:
``uniform``, ``categorical`` (explicit probabilities), ``sparse`` (probability of type 0,
"no interaction"), ``dirichlet`` (the type frequencies are a global latent with a Dirichlet
prior, learned from the data). Adding one is a class plus the decorator::

    @register_prior("mine")
    class MyPrior(EdgePrior):
        def __init__(self, num_edge_types, temperature=0.5, strength=1.0): ...
        def probs(self, like): ...

and ``prior: {name: mine, strength: 2}`` in a model spec. A prior with global latents
overrides :meth:`EdgePrior.sample` (its ``pyro.sample`` sites, outside the trajectories
plate) and :meth:`EdgePrior.make_guide` (a module that samples the same sites in the guide).

The ``graph:`` section (symmetric, shared, known and dynamic graphs) composes with any
prior; it lives in :mod:`nri_pyro.structure`.

Priors over how a dynamic graph evolves from window to window (they need
``graph.dynamic``): ``markov`` (a sticky chain: keep the previous window's type with
probability ``stay``, else redraw from a ``base`` prior) and ``markov_learned`` (the
transition matrix a global latent with a Dirichlet prior per row). A static prior draws
every window independently. A prior's :meth:`EdgePrior.window_distribution` is the one
place that says how windows relate.

A prior over latents per object, the edges a function of them: ``charges`` (a sign per
object, a pair's type the product of the two signs: charged particles; it uses knowledge
of the system, and needs a static, unshared graph without known edges).

The family's files: ``base.py`` (:class:`EdgePrior`, the registry, :func:`build_prior`),
``static.py`` (priors that draw every edge independently), ``chain.py`` (the chains) and
``nodes.py`` (priors over per-object latents).
"""

from nri_pyro.priors.base import PRIORS, EdgePrior, build_prior, check_probs, register_prior
from nri_pyro.priors.chain import (
    TRANSITIONS_SITE,
    ChainPrior,
    LearnedMarkovPrior,
    MarkovPrior,
    TransitionPosterior,
)
from nri_pyro.priors.nodes import SIGNS_SITE, ChargePrior
from nri_pyro.priors.static import (
    FREQS_SITE,
    CategoricalPrior,
    DirichletPosterior,
    DirichletPrior,
    SparsePrior,
    UniformPrior,
)

# Moved to nri_pyro.structure; importable from here for one release (0.2 drops them).
from nri_pyro.structure import GRAPH_DEFAULTS, EdgeLayout, GraphStructure, check_dynamic

__all__ = [
    "FREQS_SITE",
    "GRAPH_DEFAULTS",
    "PRIORS",
    "SIGNS_SITE",
    "TRANSITIONS_SITE",
    "CategoricalPrior",
    "ChargePrior",
    "ChainPrior",
    "DirichletPosterior",
    "DirichletPrior",
    "EdgeLayout",
    "EdgePrior",
    "GraphStructure",
    "LearnedMarkovPrior",
    "MarkovPrior",
    "SparsePrior",
    "TransitionPosterior",
    "UniformPrior",
    "build_prior",
    "check_dynamic",
    "check_probs",
    "register_prior",
]
