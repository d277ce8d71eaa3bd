"""Rebuilds the bundled demo corpus from the Python 3.11 documentation sources (PSF License).

The corpus must be real English prose, redistributable, and obtainable without network access beyond
the package registries. Debian's `python3.11-doc` package ships the reStructuredText sources of the
Python documentation (`html/_sources/**/*.rst.txt`); this script turns their prose into the official
pretraining input format: one sentence per line, a blank line between documents. A document is one
section of a page (a heading starts a new document), which gives many multi-sentence documents.

Code samples, interactive sessions, tables, directives' arguments and comments are dropped; inline
markup (roles, literals, links, emphasis) is reduced to its text.

Usage (from the repository root):

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    python data/corpus/make_corpus.py /tmp/pydoc/usr/share/doc/python3.11/html/_sources data/corpus
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from albert_jax.data.sentences import split_sentences  # noqa: E402  (path set up just above)

# Output file name -> documentation folders it is made from (in this order). Several files so that
# the data generator has several input shards to spread over workers.
SECTIONS = {
    "tutorial.txt": ["tutorial"],
    "howto.txt": ["howto"],
    "faq.txt": ["faq"],
    "reference.txt": ["reference"],
    "using_extending.txt": ["using", "extending", "installing"],
    "library_a_l.txt": ["library:a-l"],
    "library_m_z.txt": ["library:m-z"],
}
MIN_SENTENCES_PER_DOCUMENT = 2
# Directives whose whole indented body is code/markup rather than prose.
_SKIP_DIRECTIVES = {
    "code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "testsetup",
    "testcleanup", "literalinclude", "productionlist", "table", "csv-table", "list-table", "toctree",
    "image", "figure", "index", "highlight", "raw", "tabularcolumns", "include", "only", "autosummary",
    "graphviz", "digraph", "moduleauthor", "sectionauthor", "impl-detail", "availability", "audit-event",
    "opcode", "cmdoption", "option", "envvar", "program", "describe", "productionlist", "pdbcommand",
}
_HEADING_UNDERLINE = re.compile(r"""^([=\-~*^"#+'`.:])\1{2,}\s*$""")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:-]+)::")
_BULLET = re.compile(r"^(\s*)([*+-]|#\.|\d+\.|\(\d+\))\s+")
_FIELD = re.compile(r"^\s*:[^:]+:(\s|$)")

_ROLE = re.compile(r":[\w:+-]+:`([^`]*)`")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``(.+?)``")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EMPH = re.compile(r"(?<!\w)\*([^*\s][^*]*?)\*(?!\w)")
_SUBST = re.compile(r"\|([\w -]+)\|")
_FOOTNOTE = re.compile(r"\s*\[(#\w*|\d+)\]_")


def _role_text(match: re.Match) -> str:
  text = match.group(1)
  link = re.match(r"(.*?)\s*<[^>]*>$", text)
  if link and link.group(1):
    return link.group(1)
  text = text.lstrip("!")
  if text.startswith("~"):
    text = text[1:].rsplit(".", 1)[-1]
  return text


def clean_inline(text: str) -> str:
  """Reduces reStructuredText inline markup to plain text."""
  text = _FOOTNOTE.sub("", text)
  text = _ROLE.sub(_role_text, text)
  text = _LITERAL.sub(r"\1", text)
  text = _LINK.sub(r"\1", text)
  text = _REF.sub(r"\1", text)
  text = _STRONG.sub(r"\1", text)
  text = _EMPH.sub(r"\1", text)
  text = _SUBST.sub(r"\1", text)
  text = text.replace("\\ ", "")  # an escaped space joins words; other backslashes are content
  return " ".join(text.split())


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip(" "))


def rst_documents(source: str) -> list[list[str]]:
  """Returns the prose of one .rst file as documents (lists of sentences), split at headings."""
  lines = source.expandtabs(8).splitlines()
  documents: list[list[str]] = [[]]
  paragraph: list[str] = []
  skip_indent: int | None = None  # inside a skipped block: lines indented deeper than this are dropped

  def flush() -> None:
    if paragraph:
      text = clean_inline(" ".join(paragraph))
      # Paragraphs without a sentence end are mostly signatures, labels or list fragments.
      if text.endswith((".", "!", "?", '."', ".)")) and len(text.split()) >= 4:
        documents[-1].extend(split_sentences(text))
      paragraph.clear()

  for i, line in enumerate(lines):
    stripped = line.strip()
    if skip_indent is not None:
      if not stripped or _indent(line) > skip_indent:
        continue
      skip_indent = None
    next_line = lines[i + 1] if i + 1 < len(lines) else ""
    if not stripped:
      flush()
      continue
    if _HEADING_UNDERLINE.match(stripped):
      flush()
      continue
    if _HEADING_UNDERLINE.match(next_line.strip()) and len(next_line.strip()) >= len(stripped) - 2:
      flush()
      documents.append([])  # a heading starts a new document
      continue
    directive = _DIRECTIVE.match(line)
    if directive or stripped.startswith(".."):
      flush()
      name = directive.group(1) if directive else ""
      if not directive or name.split(":")[-1] in _SKIP_DIRECTIVES:
        skip_indent = _indent(line)
      continue
    if stripped.startswith((">>>", "...", "+-", "|", "$ ", "%")) or _FIELD.match(line):
      flush()
      continue
    if stripped.startswith("===") or stripped.startswith("---"):
      flush()
      continue
    bullet = _BULLET.match(line)
    if bullet:
      flush()
      stripped = line[bullet.end():].strip()
    if stripped.endswith("::"):
      # "Example::" introduces a literal block; keep the sentence, drop the block.
      paragraph.append(stripped[:-2].rstrip() + (":" if stripped[:-2].strip() else ""))
      flush()
      skip_indent = _indent(line)
      continue
    paragraph.append(stripped)
  flush()
  return [d for d in documents if len(d) >= MIN_SENTENCES_PER_DOCUMENT]


def _files_for(sources: pathlib.Path, spec: str) -> list[pathlib.Path]:
  folder, _, letters = spec.partition(":")
  files = sorted((sources / folder).rglob("*.rst.txt"))
  if letters:
    first, last = letters.split("-")
    files = [f for f in files if first <= f.name[0].lower() <= last]
  return files


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("sources", type=pathlib.Path, help="the html/_sources folder of python3.11-doc")
  parser.add_argument("output", type=pathlib.Path, help="folder for the corpus .txt files")
  args = parser.parse_args(argv)
  if not (args.sources / "tutorial").is_dir():
    parser.error(f"{args.sources} does not look like python3.11-doc's html/_sources folder")
  args.output.mkdir(parents=True, exist_ok=True)
  for name, specs in SECTIONS.items():
    documents = []
    for spec in specs:
      for path in _files_for(args.sources, spec):
        documents.extend(rst_documents(path.read_text(encoding="utf-8")))
    text = "\n\n".join("\n".join(doc) for doc in documents) + "\n"
    (args.output / name).write_text(text, encoding="utf-8")
    print(f"{name}: {len(documents)} documents, {sum(map(len, documents))} sentences, "
          f"{len(text.encode())} bytes")


if __name__ == "__main__":
  main()
