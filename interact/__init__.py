"""interact: Harsanyi (AND) and AND-OR interactions over all 2^n masked inputs, and the two-phase dynamics.

Follows Li & Zhang (ICML'23), Chen et al. (ICLR'24), Zhang et al. (arXiv 2405.10262) and Ren et al.
(arXiv 2407.19198). Subset index m in [0, 2^n): bit i says whether player i is present.

    fn = lambda xs, params, y: interact.log_odds(model.apply(params, xs), y)
    v = interact.evaluate_subsets(fn, x, baseline, players, batch_size=256, fn_args=(params, y))  # [2^n]
    i_and = interact.harsanyi(v)                       # Harsanyi dividends, O(n 2^n)
    res = interact.extract_and_or(v, q_bound=0.04, steps=10_000, lr=1e-5)   # sparse AND + OR
    pos, neg = interact.order_strengths(res.i_and, res.i_or)                # A_k^+, A_k^-
    phi = interact.shapley_values(res.i_and, res.i_or)                      # sums to v(N) - v(empty)
"""

from interact.andor import (
    AndOrResult,
    and_or_from,
    and_or_to_game,
    extract_and_or,
    learn_baseline,
    lr_schedule,
)
from interact.evaluate import (
    evaluate_subsets,
    interactions_of,
    log_odds,
    logit,
    masked_input,
    player_matrix,
    subset_values,
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
    strength_by_order,
)

__all__ = [
    "MAX_PLAYERS",
    "MLP",
    "AndOrResult",
    "MLPConfig",
    "and_or_from",
    "and_or_to_game",
    "banzhaf_interaction_index",
    "banzhaf_values",
    "evaluate_subsets",
    "extract_and_or",
    "gram_matrix",
    "harsanyi",
    "harsanyi_inverse",
    "interactions_of",
    "jaccard_by_order",
    "learn_baseline",
    "log_odds",
    "logit",
    "lr_schedule",
    "masked_input",
    "noisy_triggering_weights",
    "or_interactions",
    "or_interactions_inverse",
    "order_strengths",
    "player_matrix",
    "predicted_order_strength",
    "random_game_strength",
    "salient_mask",
    "shapley_interaction_index",
    "shapley_values",
    "strength_by_order",
    "subset_masks",
    "subset_sizes",
    "subset_values",
    "weighted_jaccard",
]
