"""Inference: predict (the CLI and API: fill-mask, classify, qa, tag, choice), loading (any
checkpoint into a model and tokenizer), mlm (a checkpoint's masked-LM head), generate (infilling
and continuation by mask-predict or Gibbs sampling) and score (pseudo-log-likelihood)."""
