"""Ranking metrics: HR/NDCG overall and by head/tail target, tail share, coverage, per-user ranks."""
from eisam.metrics.ranking import KS, evaluate_rankings, hit_ndcg, per_user_frame, target_ranks

__all__ = ["KS", "target_ranks", "hit_ndcg", "evaluate_rankings", "per_user_frame"]
