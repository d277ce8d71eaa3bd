"""The docs hold: README.md's and docs/*.md's Python examples run as written (on tiny local
checkpoints instead of downloads), each by a test here; relative links point to existing files (and
headings); every `python -m albert_jax...` names a module that exists; the README's module map lists
every module of the package; citations name public sources."""

import glob
import json
import os
import re

import numpy as np
import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DOC_FILES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCED = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)

# Each test that runs a ```python block finds it by a string that only that block contains.
# Register the string here, next to the test: test_every_python_block_is_exercised fails for a
# block that no registered string picks, so a new example cannot go untested.
HF_EXAMPLE = "convert.load_hf("
TF_EXAMPLE = "convert.load_tf("
EXERCISED = {HF_EXAMPLE: "test_docs_hf_example", TF_EXAMPLE: "test_docs_tf_example"}


def read(doc: str) -> str:
  with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
    return f.read()


def python_blocks() -> list[tuple[str, str]]:
  """(file, code) of every ```python block in README.md and docs/*.md."""
  return [(doc, code) for doc in DOC_FILES
          for code in re.findall(r"^```python\n(.*?)^```", read(doc), re.S | re.M)]


def block(marker: str) -> tuple[str, str]:
  """The one ```python block that contains `marker`: (file, code)."""
  found = [(doc, code) for doc, code in python_blocks() if marker in code]
  assert len(found) == 1, (f"{marker!r} must be in exactly one ```python block of "
                           f"{DOC_FILES}, found in {len(found)}")
  return found[0]


def run_block(marker: str, scope: dict) -> dict:
  doc, code = block(marker)
  exec(compile(code, doc, "exec"), scope)  # pylint: disable=exec-used
  return scope


def test_every_python_block_is_exercised():
  blocks = python_blocks()
  assert blocks, "no ```python block found: the collection is broken"
  for doc, code in blocks:
    markers = [m for m in EXERCISED if m in code]
    assert len(markers) == 1, (f"{doc}: the ```python block starting {code.splitlines()[0]!r} is "
                               f"picked by {markers or 'no'} registered marker(s); give it a test "
                               f"in tests/test_readme.py and register its marker in EXERCISED")
  for marker, test_name in EXERCISED.items():
    block(marker)
    assert callable(globals().get(test_name)), f"{marker!r}: no test named {test_name}"


def test_docs_hf_example(tmp_path, monkeypatch):
  transformers = pytest.importorskip("transformers")
  cfg = transformers.AlbertConfig(vocab_size=2000, embedding_size=8, hidden_size=16,
                                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=20,
                                  max_position_embeddings=32, hidden_act="gelu_new")
  transformers.AlbertForMaskedLM(cfg).save_pretrained(tmp_path / "albert-base-v2")
  monkeypatch.chdir(tmp_path)
  run_block(HF_EXAMPLE, {})
  saved = json.load(open(tmp_path / "albert-base-v2-roundtrip" / "config.json"))
  assert saved["architectures"] == ["AlbertForPreTraining"]


def test_docs_tf_example(tmp_path, monkeypatch):
  pytest.importorskip("transformers")  # test_convert's helpers import it
  from tests.test_convert import official_names, tf_shape, write_tf_checkpoint  # pylint: disable=g-import-not-at-top
  cfg = dict(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=12,
             num_attention_heads=4, intermediate_size=20, max_position_embeddings=16,
             hidden_act="gelu")
  rng = np.random.default_rng(0)
  arrays = {n: rng.normal(0, 0.2, tf_shape(n, cfg)).astype(np.float32)
            for n in official_names(1, 1, with_projection=True)}
  os.makedirs(tmp_path / "albert_base")
  write_tf_checkpoint(str(tmp_path / "albert_base" / "model.ckpt-best"), arrays)
  (tmp_path / "albert_base" / "albert_config.json").write_text(json.dumps(cfg))
  monkeypatch.chdir(tmp_path)
  scope = run_block(TF_EXAMPLE, {})
  assert scope["config"].num_hidden_layers == 12


# ----------------------------------------------------------------------------------------------
# Links, module names, the module map.
# ----------------------------------------------------------------------------------------------


def heading_anchors(text: str) -> set[str]:
  """GitHub's anchors of the headings of a Markdown text (fenced code excluded)."""
  anchors = set()
  for title in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", FENCED.sub("", text), re.M):
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    anchors.add(slug)
  return anchors


def relative_links(doc: str) -> list[str]:
  text = FENCED.sub("", read(doc))
  links = re.findall(r"\]\(([^)\s]+)\)", text)
  return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


def test_heading_anchors_follow_github():
  assert heading_anchors("# A\n## Multi-host launch\n## Planning a pod run: `albert_jax.plan`\n"
                         "```python\n# not a heading\n```\n") == {
                             "a", "multi-host-launch", "planning-a-pod-run-albert_jaxplan"}


def test_links_are_found():
  assert "docs/data.md" in relative_links("README.md")
  assert "https://arxiv.org/abs/1909.11942" not in relative_links("README.md")


@pytest.mark.parametrize("doc", DOC_FILES)
def test_relative_links_point_to_existing_files(doc):
  for link in relative_links(doc):
    target, _, anchor = link.partition("#")
    path = os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), target)) if target else \
        os.path.join(ROOT, doc)
    assert os.path.exists(path), f"{doc}: link {link!r}: {os.path.relpath(path, ROOT)} does not exist"
    if anchor and path.endswith(".md"):
      with open(path, encoding="utf-8") as f:
        anchors = heading_anchors(f.read())
      assert anchor in anchors, f"{doc}: link {link!r}: no heading #{anchor}; there are {sorted(anchors)}"


def module_file(name: str) -> str | None:
  """The file `python -m name` runs, relative to the repository root, or None."""
  base = name.replace(".", "/")
  for candidate in (base + ".py", base + "/__main__.py"):
    if os.path.isfile(os.path.join(ROOT, candidate)):
      return candidate
  return None


@pytest.mark.parametrize("doc", DOC_FILES)
def test_python_dash_m_names_existing_modules(doc):
  names = re.findall(r"python -m (albert_jax[\w.]*)", read(doc))
  for name in names:
    assert module_file(name), f"{doc}: `python -m {name}`: no such module in albert_jax/"
  if doc == "README.md":
    assert "albert_jax.main" in names


def test_module_map_lists_every_module():
  section = read("README.md").split("## Module map", 1)[1].split("\n## ", 1)[0]
  listed = {line.split()[0] for line in section.splitlines() if line.startswith("    ")}
  assert "albert_jax/model/modeling.py" in listed, "module map not found or not parsed"
  missing = []
  for path in sorted(glob.glob(os.path.join(ROOT, "albert_jax", "**", "*.py"), recursive=True)):
    rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
    package = os.path.dirname(rel) + "/"
    if rel not in listed and not (rel.endswith("/__init__.py") and package in listed):
      missing.append(rel)
  assert not missing, f"README.md's module map lacks {missing}"


def test_citations_name_public_sources():
  """Docs and docstrings cite the paper, google-research/albert files or public URLs, never notes
  that are not in this repository (e.g. the reference files the code was first written from)."""
  outside = re.compile(r"albert_official\.md|hf_albert\.md|jax_anchors\.md|\breference §\d")
  files = DOC_FILES + sorted(
      os.path.relpath(p, ROOT) for folder in ("albert_jax", "configs", "experiments", "tests")
      for p in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True))
  found = [f"{f}:{n}" for f in files for n, line in enumerate(read(f).splitlines(), 1)
           if outside.search(line)]
  assert not found, f"citations of files outside the repository: {found}"
