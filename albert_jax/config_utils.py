"""Helpers for config files: big_vision-style argument strings ("size=large,version=1"), and the
one-line reports of a config flag that does not load (a missing file, a misspelled field)."""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import config_flags as config_flags_impl


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses "k1=v1,k2=v2" into a ConfigDict, typed like `defaults`; unknown keys are errors.

  A bare key ("runlocal") sets a boolean default to True.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
    default = defaults[key]
    if not eq:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key!r} must be true or false, got {value!r}")
      out[key] = value.lower() in ("true", "1")
    else:
      out[key] = type(default)(value)
  return out


def load_sibling(config_file: str, name: str):
  """Imports config module `name`.py from the directory of `config_file` (configs are loaded by
  path, so `configs/` need not be importable as a package)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name + ".py")
  spec = importlib.util.spec_from_file_location(f"albert_jax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def define_config_flag(flag_values: flags.FlagValues, argv: Sequence[str], name: str,
                       help_text: str, lock_config: bool = True) -> None:
  """A `config_flags` FILE[:ARG] flag whose `--name.x=y` overrides are read from `argv` (the
  arguments after the program name), not from sys.argv, so a tool can parse any argv in process.
  Locked: a misspelled override is an error."""
  config_flags.DEFINE_config_file(name, None, help_text, flag_values=flag_values,
                                  lock_config=lock_config, sys_argv=["prog", *argv])


def parse_run_flags(argv: Optional[Sequence[str]], *, prog: str, doc: str,
                    example: str) -> tuple[ml_collections.ConfigDict, str]:
  """(config, workdir) of the training tools' command line (albert_jax.main, albert_jax.finetune):
  `--config=FILE[:ARG] [--config.x=y ...] --workdir=DIR`, both required, no positional word."""
  from albert_jax import command_line  # pylint: disable=g-import-not-at-top
  argv = list(sys.argv[1:] if argv is None else argv)

  def define(flag_values: flags.FlagValues) -> None:
    define_config_flag(flag_values, argv, "config", f"config file, e.g. {example}")
    flags.DEFINE_string("workdir", None, "directory for checkpoints, logs, outputs and created "
                        "data", flag_values=flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)

  args, positional = command_line.parse(define, argv, prog=prog, doc=doc)
  command_line.no_positional(positional, prog)
  return args.config, args.workdir


def _config_flags(flag_values: flags.FlagValues) -> list[str]:
  """Names of the `config_flags.DEFINE_config_file` flags among `flag_values`."""
  return [name for name in flag_values
          if isinstance(flag_values[name].parser, config_flags_impl.ConfigFileFlagParser)]


def _file_problem(name: str, spec: str) -> str | None:
  """What is wrong with `--name=spec` (FILE[:ARG]) before loading it, if anything."""
  path = spec.split(":", 1)[0]
  if not path:
    return f"--{name}: give a config file (FILE[:ARG], e.g. configs/pretrain.py:size=base)"
  if not os.path.isfile(path):
    return f"--{name}={spec}: config file {path!r} not found"
  return None


def _field_problem(config: Any, name: str, path: str) -> str | None:
  """Why `--name.path=...` names no field of `config`, if it does not."""
  node, walked = config, name
  for part in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return f"--{name}.{path}: {walked} is a value, not a section with field {part!r}"
    if part not in node:
      return (f"--{name}.{path}: {walked} has no field {part!r}; its fields: "
              f"{', '.join(sorted(node.keys()))}")
    node, walked = node[part], f"{walked}.{part}"
  return None


def explain_config_error(flag_values: flags.FlagValues, argv: Sequence[str],
                         error: BaseException) -> str:
  """One line for an error ml_collections raised while parsing `argv`: the config flag and file,
  or the `--config.x=y` override, at fault (or the error's own message when neither is)."""
  for name in _config_flags(flag_values):
    specs = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    for spec in specs:
      if (problem := _file_problem(name, spec)) is not None:
        return problem
    if not specs:
      continue
    try:
      # The config as loaded before its overrides (the flag has no value when one failed).
      config = flag_values[name].parser.parse(specs[-1])
      config.keys()  # a config that failed to load raises here (ml_collections defers it)
    except Exception:  # pylint: disable=broad-except
      continue
    for arg in argv:
      if arg.startswith(f"--{name}."):
        problem = _field_problem(config, name, arg[len(name) + 3:].split("=", 1)[0])
        if problem is not None:
          return problem
  from albert_jax import command_line  # pylint: disable=g-import-not-at-top
  return command_line.one_line(error)


def unloaded_config(flag_values: flags.FlagValues, argv: Sequence[str]) -> str | None:
  """The one line for a parsed config flag whose file failed to load (ml_collections reports it
  only when the config is first used), or None."""
  for name in _config_flags(flag_values):
    value = flag_values[name].value
    try:
      if value is not None:
        value.keys()
    except (OSError, AttributeError) as e:
      return explain_config_error(flag_values, argv, e)
  return None
