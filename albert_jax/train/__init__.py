"""Training: pretrain and finetune (jobs from configs), step (train/eval steps, microbatches), optim
(LAMB, AdamW, schedules), objectives (losses), partitioning (mesh, logical rules), checkpoints,
warm_start, distributed (multi-host), metrics (TensorBoard, progress line, FLOPs and MFU)."""
