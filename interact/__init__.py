"""interact: Harsanyi (AND) and AND-OR interactions over all 2^n masked inputs, and the two-phase dynamics.

Follows Li & Zhang (ICML'23), Chen et al. (ICLR'24), Zhang et al. (arXiv 2405.10262) and Ren et al.
(arXiv 2407.19198). Subset index m in [0, 2^n): bit i says whether player i is present.

    fn = lambda xs, params, y: interact.log_odds(model.apply(params, xs), y)
    v = interact.evaluate_subsets(fn, x, baseline, players, batch_size=256, fn_args=(params, y))  # [2^n]
    i_and = interact.harsanyi(v)                       # Harsanyi dividends, O(n 2^n)
    res = interact.extract_and_or(v, q_bound=0.04, steps=10_000, lr=1e-5)   # sparse AND + OR
    pos, neg = interact.order_strengths(res.i_and, res.i_or)                # A_k^+, A_k^-
    phi = interact.shapley_values(res.i_and, res.i_or)    # sums to (v+q)(N) - (v+q)(empty), q = res.q

The MLP that the two-phase example explains trains on the shared runtime (``interact.RunConfig``,
``init_state``, ``make_optimizer``, ``make_train_step``, ``train``, ``evaluate``; ``jaxzoo.rebuild`` of a
work directory).
"""

import numpy as np

from interact.andor import (
    AndOrResult,
    SharedAndOrResult,
    and_or_from,
    and_or_to_game,
    extract_and_or,
    extract_shared_and_or,
    learn_baseline,
    lr_schedule,
)
from interact.evaluate import (
    evaluate_subsets,
    evaluate_subsets_host,
    interactions_of,
    log_odds,
    logit,
    masked_input,
    masked_inputs_host,
    player_matrix,
    subset_values,
)
from interact.indices import (
    INDICES,
    harsanyi_low_order,
    index_weights,
    interaction_index,
    interaction_index_low_order,
    low_order_subsets,
)
from interact.metrics import jaccard_by_order, order_strengths, salient_mask, weighted_jaccard
from interact.model import MLP, MLPConfig
from interact.ops import (
    MAX_PLAYERS,
    banzhaf_interaction_index,
    banzhaf_values,
    harsanyi,
    harsanyi_inverse,
    or_interactions,
    or_interactions_inverse,
    shapley_interaction_index,
    shapley_values,
    subset_masks,
    subset_sizes,
)
from interact.theory import (
    gram_matrix,
    noisy_triggering_weights,
    predicted_order_strength,
    random_game_strength,
    random_interaction_strength,
    strength_by_order,
)
from interact.train import (
    RunConfig,
    batch_fn,
    evaluate,
    flops_per_example,
    init_state,
    loss_fn,
    make_optimizer,
    make_train_step,
    train,
)

__all__ = [
    "INDICES",
    "harsanyi_low_order",
    "index_weights",
    "interaction_index",
    "interaction_index_low_order",
    "low_order_subsets",
    "MAX_PLAYERS",
    "MLP",
    "AndOrResult",
    "SharedAndOrResult",
    "MLPConfig",
    "RunConfig",
    "and_or_from",
    "and_or_to_game",
    "banzhaf_interaction_index",
    "banzhaf_values",
    "batch_fn",
    "evaluate",
    "evaluate_subsets",
    "evaluate_subsets_host",
    "extract_and_or",
    "extract_shared_and_or",
    "flops_per_example",
    "gram_matrix",
    "harsanyi",
    "harsanyi_inverse",
    "init_state",
    "interactions_of",
    "jaccard_by_order",
    "learn_baseline",
    "log_odds",
    "logit",
    "loss_fn",
    "lr_schedule",
    "make_optimizer",
    "make_train_step",
    "masked_input",
    "masked_inputs_host",
    "noisy_triggering_weights",
    "or_interactions",
    "or_interactions_inverse",
    "order_strengths",
    "player_matrix",
    "predicted_order_strength",
    "random_game_strength",
    "random_interaction_strength",
    "salient_mask",
    "sharding_examples",
    "shapley_interaction_index",
    "shapley_values",
    "strength_by_order",
    "subset_masks",
    "subset_sizes",
    "subset_values",
    "train",
    "weighted_jaccard",
]


def sharding_examples() -> list[tuple[str, object, tuple]]:
    """One tiny instance and sample inputs of every Linen module of the package, for the sharding test
    (``jaxzoo.init_sharded(module, key, *args, mesh=make_mesh({"data": 4, "model": 2}))``)."""
    return [("MLP", MLP(config=MLPConfig.tiny()), (np.zeros((8, 8), np.float32),))]
