"""XLA's cost analysis of a compiled program with every while loop counted trip-count times.

`cost_analysis()` counts a while loop's body once, however many times it runs, so for the train
step (the depth scan, the microbatch scan) it misses all but one layer. This module reads the
compiled program's optimized HLO text, finds each loop's trip count (its condition compares the
counter with a constant; the counter starts at a constant and steps by one, as jax's scans and
fori_loops lower), and runs XLA's HloCostAnalysis once more per loop body, on that body alone, so
that each body's FLOPs and bytes can be counted as often as it runs, nested loops included.

HloCostAnalysis runs here on the host backend, which sizes each array by its logical shape; the
TPU's own analysis also counts the padding of its (8, 128) tiles. `scale` therefore keeps the
TPU's figures for the whole program and multiplies them by the host's ratio of trip-counted to
once-counted cost (which is exact for a program without loops).
"""

from __future__ import annotations

import dataclasses
import re

import jax
# HloCostAnalysis of an HLO module is not public API; jax's Lowered.cost_analysis calls the same.
from jax._src.lib import _jax
from jaxlib import _hlo


class LoopCostError(ValueError):
  """A loop of the compiled program whose trip count cannot be read."""


@dataclasses.dataclass(frozen=True)
class Cost:
  flops: float
  bytes_accessed: float


@dataclasses.dataclass(frozen=True)
class Loop:
  """A while loop of the program and how many times its body runs (per run of its parent)."""

  name: str
  body: str
  trip_count: int


_HEADER = re.compile(r"^(ENTRY )?%(\S+) \(")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? ([a-z][a-z0-9-]*)\((.*?)\)(?:, |$)")
_WHILE = re.compile(r"condition=%([^,\s]+), body=%([^,\s]+)")
_DIRECTION = re.compile(r"direction=(LT|GT)\b")
_KNOWN_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONSTANT = re.compile(r"constant\((-?\d+)\)")


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
  """{computation name: its instruction lines} and the entry computation's name."""
  comps, entry, name = {}, "", None
  for line in text.split("\n"):
    header = _HEADER.match(line)
    if header:
      name, comps[header.group(2)] = header.group(2), []
      entry = header.group(2) if header.group(1) else entry
    elif line == "}":
      name = None
    elif name is not None:
      comps[name].append(line)
  return comps, entry


def _instructions(lines: list[str]) -> dict[str, tuple[str, list[str], str]]:
  """{name: (opcode, operand names, line)} of one computation."""
  out = {}
  for line in lines:
    m = _INSTRUCTION.match(line)
    if m:
      out[m.group(1)] = (m.group(2), re.findall(r"%([^\s,)]+)", m.group(3)), line)
  return out


def _root(lines: list[str]) -> str:
  """The ROOT instruction's line of a computation."""
  return next(l for l in lines if l.lstrip().startswith("ROOT "))


def _root_name(lines: list[str]) -> str:
  """The ROOT instruction's name of a computation."""
  return _INSTRUCTION.match(_root(lines))[1]


def _resolve(comps, instructions, name: str) -> tuple[str, list[str], str]:
  """(opcode, operands, line) of `name`; a fusion that only wraps one instruction of its
  parameters (as the CPU compiler wraps a compare or an add) stands for that instruction."""
  opcode, operands, line = instructions.get(name, ("", [], ""))
  called = re.search(r"calls=%([^,\s]+)", line) if opcode == "fusion" else None
  if called:
    inner = _instructions(comps[called.group(1)])
    root = inner[_root_name(comps[called.group(1)])]
    params = {n: int(re.search(r"parameter\((\d+)\)", l).group(1))
              for n, (op, _, l) in inner.items() if op == "parameter"}
    if all(o in params for o in root[1]):
      return root[0], [operands[params[o]] for o in root[1]], root[2]
  return opcode, operands, line


def _constant(comps, instructions, name: str) -> int | None:
  """The integer value of `name` if it is a constant (through copies and bitcasts)."""
  while name in instructions:
    opcode, operands, line = _resolve(comps, instructions, name)
    if opcode == "constant":
      return int(_CONSTANT.search(line).group(1))
    if opcode not in ("copy", "bitcast") or len(operands) != 1:
      return None
    name = operands[0]
  return None


def _tuple_index(instructions, name: str) -> int | None:
  """k if `name` is get-tuple-element(parameter, index=k)."""
  opcode, operands, line = instructions.get(name, ("", [], ""))
  if opcode != "get-tuple-element" or instructions.get(operands[0], ("",))[0] != "parameter":
    return None
  return int(re.search(r"index=(\d+)", line).group(1))


def _trip_count(comps, parent, loop: str) -> int:
  """How many times the body of the while instruction `loop` (in a computation with `parent`
  instructions) runs: the compiler's known_trip_count where it prints one (the CPU's), else read
  from the condition, the counter's initial value and its step (the TPU's)."""
  _, (init_name,), line = parent[loop]
  known = _KNOWN_TRIP_COUNT.search(line)
  if known:
    return int(known.group(1))
  cond_name, body_name = _WHILE.search(line).groups()
  cond = _instructions(comps[cond_name])
  why = f"loop {loop!r} (condition {cond_name!r})"
  opcode, operands, compare = _resolve(comps, cond, _root_name(comps[cond_name]))
  direction = _DIRECTION.search(compare) if opcode == "compare" else None
  if not direction:
    raise LoopCostError(f"{why}: the condition is not counter < constant")
  counter, bound = operands if direction.group(1) == "LT" else operands[::-1]  # GT: bound > counter
  index, limit = _tuple_index(cond, counter), _constant(comps, cond, bound)
  if index is None or limit is None:
    raise LoopCostError(f"{why}: the condition is not counter < constant")
  init = parent[init_name]
  start = _constant(comps, parent, init[1][index]) if init[0] == "tuple" else None
  body = _instructions(comps[body_name])
  step_name = re.search(r"tuple\((.*)\)", _root(comps[body_name])).group(1).split(", ")[index]
  step, step_operands, _ = _resolve(comps, body, step_name.lstrip("%"))
  steps_by_one = step == "add" and len(step_operands) == 2 and {
      _tuple_index(body, step_operands[0]), _constant(comps, body, step_operands[1])} == {index, 1}
  if start is None or not steps_by_one:
    raise LoopCostError(f"{why}: the counter does not start at a constant and step by one")
  return max(0, limit - start)


def _without_attribute(head: str, attribute: str) -> str:
  """The module's header line without `, attribute={...}` (braces nest)."""
  start = head.find(f", {attribute}={{")
  if start < 0:
    return head
  end, depth = head.index("{", start), 0
  for end in range(end, len(head)):
    depth += {"{": 1, "}": -1}.get(head[end], 0)
    if depth == 0:
      break
  return head[:start] + head[end + 1:]


def _with_entry(text: str, entry: str) -> str:
  """The module text with `entry` as its entry computation (the others kept, unused). The entry's
  layout and aliasing, and the schedule, belong to the old entry and are dropped."""
  lines = text.split("\n")
  head = _without_attribute(_without_attribute(lines[0], "input_output_alias"),
                            "entry_computation_layout")
  out = [head.replace("is_scheduled=true", "is_scheduled=false")]
  for line in lines[1:]:
    header = _HEADER.match(line)
    if header:
      line = line.removeprefix("ENTRY ")
      line = "ENTRY " + line if header.group(2) == entry else line
    out.append(line)
  return "\n".join(out)


def _cost_once(text: str, entry: str) -> Cost:
  """HloCostAnalysis of the module's entry computation on the host (loop bodies counted once)."""
  try:
    module = _hlo.hlo_module_from_text(text)
    cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
  except RuntimeError as e:  # the HLO parser's or the analysis' message
    raise LoopCostError(f"XLA could not analyze computation {entry!r}: {e}") from e
  return Cost(float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)))


def analyze(text: str) -> tuple[Cost, Cost, list[Loop]]:
  """(cost counting each loop body once, as cost_analysis() does; cost counting it trip-count
  times; the loops) of a compiled program's HLO text (`compiled.as_text()`)."""
  comps, entry = _computations(text)
  once_cache: dict[str, Cost] = {}
  loops: list[Loop] = []

  def once(name: str) -> Cost:
    if name not in once_cache:
      once_cache[name] = _cost_once(text if name == entry else _with_entry(text, name), name)
    return once_cache[name]

  def counted(name: str) -> Cost:
    """once(name), with the loops it runs (directly or through calls) counted in full."""
    flops, bytes_accessed = once(name).flops, once(name).bytes_accessed
    parent = _instructions(comps[name])
    for instruction, (opcode, _, line) in parent.items():
      if opcode == "while":
        callee, times = _WHILE.search(line).group(2), _trip_count(comps, parent, instruction)
        loops.append(Loop(name=instruction, body=callee, trip_count=times))
      elif opcode == "call":
        callee, times = re.search(r"to_apply=%([^,\s]+)", line).group(1), 1
      else:
        continue
      full = counted(callee)
      flops += times * full.flops - once(callee).flops
      bytes_accessed += times * full.bytes_accessed - once(callee).bytes_accessed
    return Cost(flops, bytes_accessed)

  total = counted(entry)
  every_loop = sum(opcode == "while" for lines in comps.values()
                   for opcode, _, _ in _instructions(lines).values())
  if every_loop != len(loops):
    raise LoopCostError(f"{every_loop - len(loops)} of the program's {every_loop} loops are not "
                        "reached through the entry computation's loops and calls")
  return once(entry), total, loops


def scale(flops: float, bytes_accessed: float, text: str) -> tuple[float, float, list[Loop]]:
  """cost_analysis()'s (flops, bytes accessed) of a compiled program, with each loop body counted
  as often as it runs: scaled by the host analysis' ratio of trip-counted to once-counted cost."""
  once, counted, loops = analyze(text)
  ratio = lambda a, b: a / b if b else 1.0
  return (flops * ratio(counted.flops, once.flops),
          bytes_accessed * ratio(counted.bytes_accessed, once.bytes_accessed), loops)
