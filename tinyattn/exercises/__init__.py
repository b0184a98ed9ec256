"""Homework for tinyattn: checkers for the exercise notebooks and a grader for instructors.

    import tinyattn.exercises as ex
    ex.check_softmax(my_softmax)                     # see tinyattn.exercises.checkers

    python -m tinyattn.exercises grade submissions/  # see tinyattn.exercises.grader
"""

from .checkers import (
    check_causal_mask,
    check_layer_norm_backward,
    check_merge_heads,
    check_multi_head_forward,
    check_online_softmax,
    check_positional_encoding,
    check_scaled_dot_product_attention,
    check_softmax,
    check_softmax_backward,
    check_split_heads,
)

__all__ = [
    "check_softmax", "check_softmax_backward", "check_scaled_dot_product_attention",
    "check_causal_mask", "check_split_heads", "check_merge_heads", "check_multi_head_forward",
    "check_positional_encoding", "check_layer_norm_backward", "check_online_softmax",
]
