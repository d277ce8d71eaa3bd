"""Parameter counts of the presets against the shapes' arithmetic and the paper's Table 1."""

import subprocess
import sys

import pytest

from albert_jax.model import param_count
from albert_jax.model.config import PAPER_PARAMS, preset

# Counts from the official variable shapes (google-research/albert modeling.py; HF modeling_albert).
EXPECTED = {"albert_base": (11_683_584, 11_813_810), "albert_large": (17_683_968, 17_847_474),
            "albert_xlarge": (58_724_864, 59_021_490),
            "albert_xxlarge": (222_595_584, 223_158_450), "bert_large": (334_607_360, None),
            "bert_base": (109_081_344, None)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_match_official_shapes(name):
  model, with_heads = EXPECTED[name]
  assert param_count.count_params(preset(name)) == model
  if with_heads:
    assert param_count.count_params(preset(name), heads=True) == with_heads


def test_table_one_within_rounding():
  rows = {name: (ours, paper, note) for name, ours, paper, note in param_count.table()}
  for name in ("albert_base", "albert_large", "bert_large"):
    ours, paper, note = rows[name]
    assert abs(ours - paper) < 1e6 and not note, name
  # Where the paper's figure is off by more than its rounding, the table says so.
  for name in ("albert_xlarge", "albert_xxlarge", "bert_base"):
    ours, paper, note = rows[name]
    assert note and abs(ours - paper) >= 1e6 - 1, name
  assert "222.6M" in rows["albert_xxlarge"][2]
  assert PAPER_PARAMS["albert_xxlarge"] == 235e6


def test_cli_prints_table_and_config():
  out = subprocess.run([sys.executable, "-m", "albert_jax.model.param_count"], check=True,
                       capture_output=True, text=True).stdout
  assert "albert_xxlarge" in out and "222,595,584" in out and "235M" in out
  out = subprocess.run([sys.executable, "-m", "albert_jax.model.param_count",
                        "--config=configs/model.py:size=base", "--config.embedding_size=768",
                        "--config.layer_sharing=none"], check=True, capture_output=True,
                       text=True).stdout
  # Table 3: not-shared ALBERT-base with E = 768 is BERT-base (no projection when E == H).
  assert "109,081,344 parameters" in out


def test_runlocal_keeps_the_presets_family():
  import os  # pylint: disable=g-import-not-at-top
  from albert_jax import config_utils  # pylint: disable=g-import-not-at-top
  configs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
  pretrain = config_utils.load_sibling(os.path.join(configs, "x.py"), "pretrain")
  bert = pretrain.get_config("size=bert_base,runlocal").model
  assert (bert.layer_sharing, bert.embedding_size, bert.hidden_size) == ("none", 32, 32)
  assert bert.hidden_dropout_prob == 0.1
  albert = pretrain.get_config("size=base,version=1,runlocal").model
  assert (albert.layer_sharing, albert.embedding_size, albert.hidden_dropout_prob) == ("all", 16,
                                                                                      0.1)
  with pytest.raises(ValueError, match=r"size='huge'; allowed: base\|large"):
    pretrain.get_config("size=huge")


def test_presets_dropout_by_version():
  assert preset("albert_base", 1).hidden_dropout_prob == 0.1
  assert preset("albert_xxlarge", 1).hidden_dropout_prob == 0.0
  assert preset("albert_large", 2).attention_probs_dropout_prob == 0.0
  bert = preset("bert_base")
  assert bert.embedding_size == bert.hidden_size and bert.layer_sharing == "none"
  assert not param_count.modeling.ModelConfig.from_any(bert).has_embedding_projection
  with pytest.raises(ValueError, match="preset"):
    preset("albert_huge")
