"""albert_jax.plan.loop_costs: XLA's cost analysis with each loop body counted as often as it runs.

The programs here are compiled for the CPU; the same text format comes from the TPU compiler
(tests/test_plan.py runs the train step through it).
"""

import re

import jax
import jax.numpy as jnp
import pytest

from albert_jax.plan import loop_costs

N = 64
MATMUL_FLOPS = 2 * N ** 3


def compiled_text(fn, *args, known_trip_counts: bool = True) -> str:
  """The optimized HLO text. The CPU compiler prints each loop's known trip count, the TPU
  compiler does not: without them the trip count is read from the loop's condition and counter."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  return text if known_trip_counts else re.sub(r',?"known_trip_count":\{"n":"\d+"\}', "", text)


def layers(x, w, length, unroll=1):
  return jax.lax.scan(lambda h, _: (jnp.tanh(h @ w), None), x, None, length=length,
                      unroll=unroll)[0]


@pytest.mark.parametrize("known_trip_counts", [True, False])
def test_a_scan_is_counted_trip_count_times(known_trip_counts):
  x = w = jnp.ones((N, N))
  text = compiled_text(lambda x, w: layers(x, w, 7), x, w, known_trip_counts=known_trip_counts)
  assert ("known_trip_count" in text) == known_trip_counts
  once, counted, loops = loop_costs.analyze(text)
  assert [l.trip_count for l in loops] == [7]
  # cost_analysis() and the analysis here count the body once: one matmul.
  assert MATMUL_FLOPS <= once.flops < 2 * MATMUL_FLOPS
  assert 7 * MATMUL_FLOPS <= counted.flops < 8 * MATMUL_FLOPS
  # The same arithmetic as straight-line code, which cost_analysis() counts in full.
  unrolled = jax.jit(lambda x, w: layers(x, w, 7, unroll=7)).lower(x, w).compile()
  assert counted.flops == pytest.approx(unrolled.cost_analysis()["flops"], rel=0.01)
  assert counted.bytes_accessed > 5 * once.bytes_accessed


@pytest.mark.parametrize("known_trip_counts", [True, False])
def test_nested_loops_multiply(known_trip_counts):
  x = w = jnp.ones((N, N))
  outer = lambda x, w: jax.lax.scan(lambda h, _: (layers(h, w, 5), None), x, None, length=3)[0]
  text = compiled_text(outer, x, w, known_trip_counts=known_trip_counts)
  _, counted, loops = loop_costs.analyze(text)
  assert sorted(l.trip_count for l in loops) == [3, 5]
  assert 15 * MATMUL_FLOPS <= counted.flops < 16 * MATMUL_FLOPS


def test_scale_keeps_the_backend_figures_and_applies_the_ratio():
  x = w = jnp.ones((N, N))
  text = compiled_text(lambda x, w: layers(x, w, 4), x, w)
  once, counted, _ = loop_costs.analyze(text)
  flops, bytes_accessed, loops = loop_costs.scale(1000.0, 2000.0, text)
  assert flops == pytest.approx(1000.0 * counted.flops / once.flops)
  assert bytes_accessed == pytest.approx(2000.0 * counted.bytes_accessed / once.bytes_accessed)
  assert [l.trip_count for l in loops] == [4]
  # Without loops, the figures are the backend's own.
  assert loop_costs.scale(1000.0, 2000.0, compiled_text(jnp.tanh, x))[:2] == (1000.0, 2000.0)


def test_a_loop_whose_trip_count_depends_on_the_data_is_an_error():
  def until(x, limit):
    return jax.lax.while_loop(lambda c: c[0] < limit, lambda c: (c[0] + 1, jnp.tanh(c[1])),
                              (0, x))[1]
  text = compiled_text(until, jnp.ones((N,)), 5)
  with pytest.raises(loop_costs.LoopCostError, match="the condition is not counter < constant"):
    loop_costs.analyze(text)


def test_a_program_xla_cannot_parse_is_an_error():
  text = "HloModule m\n\nENTRY %main () -> f32[] {\n  ROOT %x = f32[] no-such-op()\n}\n"
  with pytest.raises(loop_costs.LoopCostError, match="XLA could not analyze computation 'main'"):
    loop_costs.analyze(text)
