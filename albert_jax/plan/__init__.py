"""Planning pod runs ahead of time: planner (compile the train step for a TPU topology, the fit
search, the report), roofline (the compiler's speed estimate), loop_costs (its loops counted),
tpu_specs (chips' HBM and peaks)."""
