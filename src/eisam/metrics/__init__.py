"""Ranking metrics: HR/NDCG overall and by head/tail target, tail share, coverage, per-user ranks."""
from eisam.metrics.ranking import KS, evaluate_rankings, hit_ndcg, nll_by_group, per_user_frame, target_ranks

__all__ = ["KS", "target_ranks", "hit_ndcg", "evaluate_rankings", "nll_by_group", "per_user_frame"]
