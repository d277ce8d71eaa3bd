"""Checkpoint interop: convert (Hugging Face, official TF1 / TF-Hub, our own format), names (the
tables between the formats), hf_classes (the Hugging Face class of each model)."""
