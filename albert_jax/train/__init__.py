"""Training: loop (THE train loop, shared), job (the Job: mesh, model, objective, optimizer, jitted
step; the shared config checks), pretrain and finetune (jobs and hooks from configs), step
(train/eval steps, microbatches), optim (LAMB, AdamW, schedules), objectives (losses),
partitioning (mesh, logical rules), checkpoints, warm_start, distributed (multi-host), metrics
(TensorBoard, progress line, FLOPs and MFU)."""
