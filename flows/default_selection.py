"""The default selection steps, and the benchmark that chose them.

dedup -> IFD <= 1 -> top half by the rank fusion of target_sim (RDS+'s position-weighted
pooling, ``score.options.target_sim.pooling``; target rows embedded without their context field,
``score.target_context``) and CoLoR-sum.

Measured with ``benchmarks.selection`` (issue 22): pool 400 T0 rows, 100 target rows (50 for
200-row types), 150 held-out rows, every arm a 10% pick fine-tuned with LoRA for 16 steps (batch
4, lr 5e-4), random 10% over 5 seeds. Held-out response NLL; in brackets the distance from the
random mean in its standard errors (negative: better than random).

1. The choice, on three T0 task types left out of the pool (``loto:``), one per answer form::

    arm                          summarization    sentiment       extractive_qa
    base (untrained)             3.5089           8.9336          4.8955
    random 10%, mean +- SE       3.4891 +- .0101  4.6359 +- .1522 3.5403 +- .0291
    target_sim, response (old)   3.4550 (-3.4)    4.7453 (+0.7)   3.4981 (-1.5)
    CoLoR-sum                    3.3831 (-10.4)   4.8055 (+1.1)   3.5349 (-0.2)
    rds (weighted pooling)       3.5661 (+7.6)    4.1286 (-3.3)   3.6766 (+4.7)
    crds_w (whitened rds)        3.5129 (+2.3)    4.5924 (-0.3)   3.5954 (+1.9)
    ts_len (length penalty)      3.4512 (-3.7)    4.6735 (+0.2)   3.5705 (+1.0)
    ts_lenmatch (length quotas)  3.4191 (-6.9)    4.7453 (+0.7)   3.6168 (+2.6)
    ts_density (TSDS-like kNN)   3.4623 (-2.6)    4.6739 (+0.2)   3.6795 (+4.8)
    rrf target_sim + CoLoR-sum   3.3905 (-9.7)    4.6670 (+0.2)   3.4697 (-2.4)
    rrf3 (+ rds)                 3.4373 (-5.1)    4.3811 (-1.7)   3.4974 (-1.5)
    rrf rds + CoLoR-sum (this)   3.4164 (-7.2)    4.0809 (-3.6)   3.5226 (-0.6)

   Every single score lost to random on some target by more than 1 SE. Only the two fusions with
   CoLoR-sum beat random by more than 2 SE on 2 of 3 targets and lost on none; of those, rds +
   CoLoR-sum is the one whose worst ratio to the random mean is below 1 (0.995 on extractive_qa;
   target_sim + CoLoR-sum: 1.007 on sentiment). Dropped (opt-in benchmark columns only): crds_w,
   crds_r, ts_len, ts_lenmatch, ts_density.

2. The check on the six targets not used to choose (the default arm only, against random)::

    target (answer form)               base    random 10% mean +- SE (min-max)  default          ratio
    loto:commonsense_qa (choices)      8.4245  5.5022 +- .0371 (5.359-5.564)    5.3644 (-3.7)    0.975
    loto:data_to_text (long)           2.5338  2.5332 +- .0187 (2.476-2.586)    2.4639 (-3.7)    0.973
    loto:closed_book_qa (short QA)     5.2151  4.1560 +- .0718 (3.940-4.353)    3.9150 (-3.4)    0.942
    dialogue_summarization (kin)       2.6021  2.6388 +- .0324 (2.573-2.749)    2.5246 (-3.5)    0.957
    adversarial_qa, with context       4.4436  3.3333 +- .0399 (3.197-3.436)    3.4032 (+1.8)    1.021
    adversarial_qa (this)              4.4436  3.3333 +- .0399 (3.197-3.436)    3.1583 (-4.4)    0.947
    pubmedqa, with context             3.3279  3.3134 +- .0091 (3.291-3.335)    3.2718 (-4.6)    0.987
    pubmedqa (this)                    3.3279  3.3134 +- .0091 (3.291-3.335)    3.2596 (-5.9)    0.984

   adversarial_qa (passage + question -> span, kin in the pool) was the one loss: its target
   vector, pooled over whole sequences, was mostly Wikipedia passages and pulled rows on the
   passages' topics. ``score.target_context = false`` embeds the target rows without their
   context field (the task's instruction and answer, not its documents); the pool's rows are
   unchanged. It was found on adversarial_qa, so pubmedqa (abstract + question -> a ~40-word
   conclusion, nothing like it in the pool) is its check: -5.9 SE without the abstracts, -4.6
   with them. The T0 targets have no context field: the setting leaves their target vector, picks
   and losses as they were. On pubmedqa and data_to_text 16 steps barely move the random picks
   from the untrained model (1.6 and 0.0 SE), so their differences are small in nats. On
   adversarial_qa the loss gain does not show in greedy answers after 16 steps: exact match
   0.053 and F1 0.115 against random's 0.060 and 0.116 (means over the seeds).

Over all nine targets: better than random by more than 2 SE on 8 (all but extractive_qa), worse by more than
1 SE on none, worst ratio to the random mean 0.995 (extractive_qa).

The default command (``python -m benchmarks.selection``: the default and random 10%, 5 seeds, on
the eight targets above but pubmedqa; results in benchmarks/results/selection_default.json)
reproduced these losses exactly: > 2 SE better on 7 of 8, worse on none,
``default_vs_random10=0.9950``. About 2.9 h on 2 cores (``wall_time_s=13332`` with two targets
run beside other jobs; 956-2,072 s a quiet target, adversarial_qa the longest for its greedy EM/F1).

A fusion step in the defaults keeps the scores a run still computes (:func:`narrowed`):
``--scores target_sim,ifd`` ranks by target_sim alone.
"""

from __future__ import annotations

from typing import Any

from instruct_selectors.steps.top_k import TopK


def default_steps() -> list[dict[str, Any]]:
    """dedup -> IFD <= 1 -> top half by the rank fusion of target_sim and CoLoR-sum."""
    return [
        {"dedup": {"near": True, "near_threshold": 0.8}},
        {"threshold": {"column": "score_ifd", "max": 1.0}},
        {"top_k": {"fuse": ["score_target_sim", "score_color"], "fraction": 0.5}},
    ]


def narrowed(step: TopK, drop: set[str]) -> TopK:
    """A top_k fusion step without the columns ``drop``: one column left ranks by that column."""
    options = step.spec()[step.name]
    left = [c for c in step.fuse if c not in drop]
    rest = {k: v for k, v in options.items() if k not in ("fuse", "rrf_k")}
    return TopK(**({**rest, "column": left[0]} if len(left) == 1 else {**options, "fuse": left}))
