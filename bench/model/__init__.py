"""The decoder model: shapes (presets) and the PyTorch decoder with its KV cache."""
