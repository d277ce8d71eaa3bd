"""What the tools' command lines share: absl flags of their own, one usage boundary, one start.

A tool (convert, predict, tokenization, create_pretraining_data, tasks.metrics) defines its flags
in `define_flags(flag_values)`, which only `parse` calls, so importing the tool as a library
defines no flag. Its `main(argv)` takes the arguments after the program name and parses them into
a fresh `FlagValues`: it can be called in process any number of times (the tests do), and
`python -m albert_jax.X` reaches it through `run`. absl parses flags anywhere among the positional
arguments, so `predict MODE TEXT... --checkpoint=DIR` and `tokenization train --input=...` read
as they always have; `--` ends the flags.

A bad flag ends in one line on stderr, `error: <the flag and what is allowed>`, and exit status 2
(a SystemExit, in process too); `--help` prints the tool's docstring and its flags.

The error boundary (DESIGN.md section 4): `boundary(main)`, which `run` applies, turns a bad input
(an `InputError`, or a ValueError / KeyError / OSError, whose messages name the field or file)
into the same one line and exit status 2, without a traceback. ALBERT_JAX_TRACEBACK=1 in the
environment lets the exception through instead, traceback and all (for debugging). Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, NoReturn, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from albert_jax import config_utils

USAGE_EXIT_CODE = 2
TRACEBACK_ENV = "ALBERT_JAX_TRACEBACK"  # set to 1: bad inputs raise with their traceback
# What a bad config, flag or input raises; anything else is a bug and keeps its traceback.
INPUT_ERRORS = (ValueError, KeyError, OSError)
_TRACEBACK_HEAD = "Traceback (most recent call last):"


class InputError(ValueError):
  """A bad config, flag or input (its message names the field or file and what is allowed): the
  command line reports it as one line."""


def show_tracebacks() -> bool:
  """Whether ALBERT_JAX_TRACEBACK asks for the traceback of bad inputs (debugging)."""
  return os.environ.get(TRACEBACK_ENV, "").lower() not in ("", "0", "false", "no")


def one_line(error: BaseException | str) -> str:
  """The message of `error` as one line: a KeyError's without its quotes, a message that embeds a
  formatted traceback (ml_collections' config errors do) reduced to that traceback's last line,
  and the remaining lines joined by '; '."""
  if isinstance(error, KeyError) and len(error.args) == 1 and isinstance(error.args[0], str):
    text = error.args[0]
  else:
    text = str(error) or type(error).__name__
  if _TRACEBACK_HEAD in text:
    head, _, trace = text.partition(_TRACEBACK_HEAD)
    last = [line.strip() for line in trace.splitlines() if line.strip()][-1]
    # "ValueError: configs/pretrain.py: size='huge'; ..." -> the message after the type.
    kind, sep, message = last.partition(": ")
    last = message if sep and kind.replace(".", "").isidentifier() else last
    head = head.strip().removesuffix(":").replace("Error whilst parsing config file", "").strip()
    text = f"{head.rstrip(':')}: {last}" if head else last
  return "; ".join(line.strip() for line in text.splitlines() if line.strip())
_HELP_FLAGS = ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?")


def usage_error(message: str) -> NoReturn:
  """Ends the command: one line naming the flag or argument and what is allowed, exit status 2."""
  print(f"error: {one_line(message)}", file=sys.stderr)
  raise SystemExit(USAGE_EXIT_CODE)


def boundary(main: Callable[..., Optional[int]]) -> Callable[..., Optional[int]]:
  """`main` with the error boundary: a bad input (INPUT_ERRORS) is printed as `error: <one line>`
  on stderr and returns exit status 2; the switch TRACEBACK_ENV lets it through instead."""
  @functools.wraps(main)
  def bounded(*args, **kwargs) -> Optional[int]:
    try:
      return main(*args, **kwargs)
    except INPUT_ERRORS as e:
      if show_tracebacks():
        raise
      sys.stdout.flush()  # what the tool printed first stays before the error line
      print(f"error: {one_line(e)}", file=sys.stderr)
      return USAGE_EXIT_CODE
  return bounded


def help_text(flag_values: flags.FlagValues, doc: str) -> str:
  """The tool's docstring followed by every flag it defines, with its default (absl's own
  --flagfile and --undefok left out)."""
  tools = [m for m in flag_values.flags_by_module_dict() if m != "absl.flags"]
  # module_help heads its (indented) flags with the defining module: an implementation detail.
  listing = "\n".join(line for m in tools for line in flag_values.module_help(m).splitlines()
                       if line.startswith(" "))
  return f"{doc.rstrip()}\n\nflags:\n{listing}\n"


def parse(define_flags: Callable[[flags.FlagValues], None], argv: Optional[Sequence[str]], *,
          prog: str, doc: str) -> tuple[flags.FlagValues, list[str]]:
  """The tool's flags parsed from `argv` (the arguments after the program name; None: those of
  this process) and the positional arguments, in their order.

  `--help` prints `help_text` and exits 0; a malformed, unknown or missing flag is a
  `usage_error`.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  flag_values = flags.FlagValues()
  define_flags(flag_values)
  options = argv[:argv.index("--")] if "--" in argv else argv
  if any(a in _HELP_FLAGS for a in options):
    sys.stdout.write(help_text(flag_values, doc))
    raise SystemExit(0)
  try:
    rest = flag_values([prog, *argv])
  except flags.Error as e:
    usage_error(f"{one_line(e)} (`{prog} --help` lists the flags)")
  except (KeyError, AttributeError, OSError, SyntaxError, ImportError) as e:
    # Raised by ml_collections while it loads a config file or applies `--config.x=y`.
    usage_error(config_utils.explain_config_error(flag_values, argv, e))
  if (problem := config_utils.unloaded_config(flag_values, argv)) is not None:
    usage_error(problem)
  return flag_values, rest[1:]


def no_positional(args: Sequence[str], prog: str) -> None:
  """A usage error for a tool that takes flags only: a stray word is a mistyped flag, never
  ignored."""
  if args:
    usage_error(f"unexpected arguments {list(args)}: `{prog}` takes flags only (`--name=value`)")


def run(main: Callable[[Sequence[str]], Optional[int]]) -> None:
  """`python -m` entry: absl's app.run (logging handler, fault handler, exit status) around
  `boundary(main)(arguments after the program name)`.

  absl's own FLAGS are parsed from the program name alone (the tool parses its flags itself), and
  library INFO logs (orbax is chatty) are kept out of the way, as albert_jax.main does.
  """
  def start(argv: Sequence[str]) -> Optional[int]:
    logging.set_verbosity(logging.WARNING)
    return boundary(main)(argv[1:])

  app.run(start, argv=sys.argv, flags_parser=lambda argv: [*flags.FLAGS(argv[:1]), *argv[1:]])
