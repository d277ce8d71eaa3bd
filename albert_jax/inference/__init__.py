"""Inference: predict (the CLI and API: fill-mask, classify, qa, tag, choice), loading (any
checkpoint into a model and tokenizer)."""
