"""The settings of masked-LM generation and its slot syntax, without jax: the predict command line
checks its flags and inputs with them before the model's libraries load. What each setting does is
in generate.py's docstring.
"""

from __future__ import annotations

import dataclasses
import re

from albert_jax.tasks import InputError

STRATEGIES = ("mask_predict", "gibbs")
ORDERS = ("left_to_right", "random")
SLOT = re.compile(r"\[MASK(?:\*([^\]]*))?\]")


@dataclasses.dataclass(frozen=True)
class DecodeSettings:
  """How slots are filled (see the module docstring); validated at construction."""

  strategy: str = "mask_predict"  # one of STRATEGIES
  iterations: int = 10            # mask_predict: T forward passes; gibbs: sweeps over the slots
  order: str = "left_to_right"    # gibbs: the order of a sweep, one of ORDERS
  burn_in: int = 0                # gibbs: first sweeps drawing from the full distribution
  greedy: bool = False            # take the most probable piece instead of sampling
  temperature: float = 1.0        # sampling: logits / temperature
  top_k: int = 0                  # sampling: only the k most probable pieces (0: all)
  top_p: float = 1.0              # sampling: the nucleus of probability top_p (1.0: all)
  seed: int = 0                   # input i draws from fold_in(PRNGKey(seed), i)
  batch_size: int = 32            # inputs per device call

  def __post_init__(self):
    checks = [
        ("strategy", self.strategy in STRATEGIES, f"one of {STRATEGIES}"),
        ("order", self.order in ORDERS, f"one of {ORDERS}"),
        ("iterations", isinstance(self.iterations, int) and self.iterations >= 1, "an int >= 1"),
        ("burn_in", isinstance(self.burn_in, int) and 0 <= self.burn_in, "an int >= 0"),
        ("temperature", self.temperature > 0, "> 0"),
        ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an int >= 0 (0: all)"),
        ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
        ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an int >= 1"),
    ]
    for field, ok, allowed in checks:
      if not ok:
        raise InputError(f"decode setting {field}={getattr(self, field)!r}: must be {allowed}")
    if self.strategy == "gibbs" and self.burn_in > self.iterations:
      raise InputError(f"decode setting burn_in={self.burn_in}: at most iterations="
                       f"{self.iterations} (burn-in sweeps are part of the sweeps)")
    if self.strategy == "mask_predict" and self.burn_in:
      raise InputError(f"decode setting burn_in={self.burn_in}: a gibbs setting; mask_predict "
                       "has none (use 0)")


def continuation_template(prompt: str, max_new_pieces: int, suffix: str = "",
                          where: str = "input") -> str:
  """The infilling text of a continuation: the prompt, max_new_pieces slot pieces, the suffix."""
  if not prompt or not prompt.strip():
    raise InputError(f"{where}: empty prompt (continuation needs text to continue)")
  if not isinstance(max_new_pieces, int) or max_new_pieces < 1:
    raise InputError(f"{where}: max_new_pieces={max_new_pieces!r}: must be an int >= 1")
  return f"{prompt} [MASK*{max_new_pieces}] {suffix or ''}".rstrip()
