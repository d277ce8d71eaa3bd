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
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

USAGE_EXIT_CODE = 2
_HELP_FLAGS = ("-h", "-help", "--help", "--helpshort", "--helpfull", "-?")


def usage_error(message: str) -> NoReturn:
  """Ends the command: one line naming the flag or argument and what is allowed, exit status 2."""
  print(f"error: {message}", file=sys.stderr)
  raise SystemExit(USAGE_EXIT_CODE)


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
    usage_error(f"{'; '.join(str(e).splitlines())} (`{prog} --help` lists the flags)")
  return flag_values, rest[1:]


def no_positional(args: Sequence[str], prog: str) -> None:
  """A usage error for a tool that takes flags only: a stray word is a mistyped flag, never
  ignored."""
  if args:
    usage_error(f"unexpected arguments {list(args)}: `{prog}` takes flags only (`--name=value`)")


def run(main: Callable[[Sequence[str]], Optional[int]]) -> None:
  """`python -m` entry: absl's app.run (logging handler, fault handler, exit status) around
  `main(arguments after the program name)`.

  absl's own FLAGS are parsed from the program name alone (the tool parses its flags itself), and
  library INFO logs (orbax is chatty) are kept out of the way, as albert_jax.main does.
  """
  def start(argv: Sequence[str]) -> Optional[int]:
    logging.set_verbosity(logging.WARNING)
    return main(argv[1:])

  app.run(start, argv=sys.argv, flags_parser=lambda argv: [*flags.FLAGS(argv[:1]), *argv[1:]])
