"""Published shapes of the backbones that are built or priced without downloading them, in one place:
scripts/gpu_check.py builds a random model of a shape, ``python -m eisam.report plan`` counts its FLOPs."""

# Qwen/Qwen2-0.5B's config.json (494 M parameters with tied embeddings); `tiny`: the same layout, small,
# its vocabulary the tokenizer's (vocab_size 0: whatever the tokenizer has).
SHAPES = {
    "qwen2_0_5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=131072),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=0, max_position_embeddings=1024),
}
