"""The ALBERT model: config (fields, validation, presets), modeling (embeddings, the scanned encoder,
task models), attention (xla and fused cores), heads, layers, param_count."""
