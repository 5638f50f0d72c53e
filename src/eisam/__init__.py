"""eisam-rec: Efficient Item-wise Sharpness-Aware Minimization for LLM-based recommenders."""
