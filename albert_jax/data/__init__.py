"""ALBERT data: SentencePiece tokenization, pretraining-data creation, and the tf.data input pipeline.

Modules: tokenization (text -> ids, vocabulary trainer), sentences (raw text -> sentences),
masking (whole-word n-gram masked LM), pretraining_data (documents -> SOP/NSP instances),
records (TFRecord/tf.train.Example encoding without TensorFlow), sources (work units over text
files or tfds), create_pretraining_data (the CLI), pipeline (per-host tf.data reader),
demo_data (the bundled demo corpus).
"""
