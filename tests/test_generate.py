"""Generation (mask-predict, Gibbs) and pseudo-log-likelihood scoring with the masked LM: a tiny
model trained here to memorize a few sentences regenerates masked words and spans of them and
prefers them to shuffled copies; PLL against a one-copy-at-a-time reference; seeds; a converted
Hugging Face checkpoint against transformers (API and `predict generate` / `predict score`);
one-line errors."""

import dataclasses
import functools
import json
import math
import random

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from albert_jax.data import tokenization
from albert_jax.inference import generate, loading, predict, score
from albert_jax.inference.loading import InputError
from albert_jax.inference.mlm import MaskedLM, join_pieces
from albert_jax.model import modeling
from albert_jax.model.config import ModelConfig

SENTENCES = [
    "the function returns a new list of items .",
    "a dictionary maps keys to values .",
    "the loop ends when the iterator is exhausted .",
    "strings are immutable sequences of unicode characters .",
    "exceptions are raised by the interpreter .",
]
LENGTH = 16  # every sentence fits with [CLS] and [SEP]
TRAIN_STEPS, STEP_SIZE = 300, 3e-3


def tiny(vocab_size, **kw):
  return ModelConfig(**dict(vocab_size=vocab_size, embedding_size=32, hidden_size=64,
                            num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                            max_position_embeddings=64, **kw))


def random_params(config, seed):
  """The usual initialization (normal(0.02) weights, zero biases, unit LayerNorm scales) without
  running model.init, whose eager or compiled run costs more than all that is tested here."""
  abstract = modeling.nn.unbox(jax.eval_shape(modeling.AlbertForMaskedLM(config).init,
                                              jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32)))
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    name = path[-1].key
    if name == "scale":
      return np.ones(leaf.shape, leaf.dtype)
    if name == "bias":
      return np.zeros(leaf.shape, leaf.dtype)
    return (0.02 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(init, abstract["params"])


def train_mlm(config, ids, attention, steps, seed=0):
  """MLM training on repeated sentences: a random 10-60% of each sentence's pieces masked."""
  model = modeling.AlbertForMaskedLM(config)
  params = random_params(config, seed)
  optimizer = optax.adam(STEP_SIZE)
  scorable = jnp.asarray(attention.astype(bool)).at[:, 0].set(False)
  scorable = scorable & (jnp.arange(ids.shape[1]) < attention.sum(1)[:, None] - 1)

  def loss_fn(p, key):
    rate_key, mask_key = jax.random.split(key)
    rate = jax.random.uniform(rate_key, (ids.shape[0], 1), minval=0.1, maxval=0.6)
    masked = scorable & (jax.random.uniform(mask_key, ids.shape) < rate)
    inputs = jnp.where(masked, 4, ids)  # [MASK] (id 4 in our SentencePiece models)
    logits = model.apply({"params": p}, inputs, attention)["mlm_logits"]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), ids[..., None], -1)[..., 0]
    return (nll * masked).sum() / jnp.maximum(masked.sum(), 1)

  @jax.jit
  def step(p, opt_state, key):
    loss, grads = jax.value_and_grad(loss_fn)(p, key)
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  opt_state = optimizer.init(params)
  for i in range(steps):
    params, opt_state, loss = step(params, opt_state, jax.random.PRNGKey(1000 + i))
  return params, float(loss)


@pytest.fixture(scope="module")
def tok(spm_model):
  return tokenization.SentencePieceTokenizer(spm_model)


@pytest.fixture(scope="module")
def trained(tok):
  assert tok.mask_id == 4
  rows = [[tok.cls_id] + tok.encode(s) + [tok.sep_id] for s in SENTENCES] * 4
  ids, attention = np.zeros((2, len(rows), LENGTH), np.int32)
  for r, row in enumerate(rows):
    ids[r, :len(row)], attention[r, :len(row)] = row, 1
  config = tiny(tok.vocab_size)
  params, loss = train_mlm(config, jnp.asarray(ids), jnp.asarray(attention), TRAIN_STEPS)
  assert loss < 0.1, loss  # memorized
  return MaskedLM(config, params, tok, "the trained model")


@pytest.fixture(scope="module")
def untrained(tok):
  return MaskedLM(tiny(tok.vocab_size), random_params(tiny(tok.vocab_size), 7), tok)


def pieces_of(tok, text):
  return tok.tokenize(text)


# ----------------------------------------------------------------------------------------------
# Generation.
# ----------------------------------------------------------------------------------------------


def test_mask_predict_greedy_regenerates_a_word_and_multi_piece_spans(trained, tok):
  texts = ["a dictionary maps keys to [MASK] .",          # one piece
           "the function returns [MASK*3] of items .",    # three words
           "the loop ends when the iterator is [MASK*2] ."]  # one word of two pieces
  originals = [SENTENCES[1], SENTENCES[0], SENTENCES[2]]
  settings = generate.DecodeSettings(greedy=True, iterations=4)
  results = generate.infill(trained, texts, settings)
  assert [len(g.slots) for g in results] == [1, 1, 1]
  for g, original in zip(results, originals):
    assert g.pieces == pieces_of(tok, original)
    assert g.text == join_pieces(pieces_of(tok, original))
  assert results[0].slots[0].pieces == ["▁values"] and results[0].slots[0].text == "values"
  assert results[1].slots[0].pieces == ["▁a", "▁new", "▁list"]
  assert results[1].slots[0].text == "a new list" and results[1].slots[0].position == 3
  assert results[2].slots[0].pieces == ["▁exhaust", "ed"]
  assert results[2].slots[0].text == "exhausted"
  for g in results:  # memorized: confident
    slot = g.slots[0]
    assert len(slot.probabilities) == len(slot.pieces) == len(slot.ids)
    assert all(0.5 < p <= 1.0 for p in slot.probabilities)
    assert g.to_json()["slots"][0]["pieces"] == slot.pieces
  # Greedy Gibbs on a one-piece slot sees the same context as mask-predict's first pass, so it
  # picks the same piece. On longer spans the two may settle on different pieces (the first
  # left-to-right pick is made with the rest of the span masked), so only the shape is compared.
  gibbs = generate.infill(trained, texts, generate.DecodeSettings(strategy="gibbs", greedy=True,
                                                                  iterations=2))
  assert gibbs[0].text == results[0].text
  assert [len(g.slots[0].pieces) for g in gibbs] == [1, 3, 2]


def test_continuation_before_a_suffix_and_at_the_end(trained, tok):
  settings = generate.DecodeSettings(greedy=True, iterations=3)
  prompts = ["strings are immutable", "exceptions are raised by the", "a dictionary"]
  results = generate.continue_text(trained, prompts, 3, settings=settings,
                                   suffixes=["characters .", "", "keys to values ."])
  assert [g.text for g in results] == [join_pieces(pieces_of(tok, SENTENCES[i])) for i in (3, 4, 1)]
  assert [g.slots[0].pieces for g in results] == [
      ["▁sequences", "▁of", "▁unicode"], ["▁interpreter", "▁", "."], ["▁", "map", "s"]]
  assert [g.slots[0].position for g in results] == [3, 5, 2]
  assert results[2].slots[0].text == "maps"


def test_same_seed_same_output_other_seeds_other_samples(untrained):
  texts = ["the [MASK*6] of [MASK*4] .", "[MASK*5] values"]
  for strategy, order in (("mask_predict", "left_to_right"), ("gibbs", "random")):
    settings = generate.DecodeSettings(strategy=strategy, order=order, iterations=3, seed=11,
                                       temperature=1.0)
    first = [g.to_json() for g in generate.infill(untrained, texts, settings)]
    assert [g.to_json() for g in generate.infill(untrained, texts, settings)] == first
    others = [[g.to_json() for g in generate.infill(
        untrained, texts, generate.DecodeSettings(strategy=strategy, order=order, iterations=3,
                                                  seed=seed))] for seed in (12, 13)]
    for other in others:
      assert [s["ids"] for g in other for s in g["slots"]] != [
          s["ids"] for g in first for s in g["slots"]], strategy
  # Batch 1 and batch 32 give the same outputs (each input has its own key).
  settings = generate.DecodeSettings(iterations=2, seed=5, batch_size=1)
  one = [g.to_json() for g in generate.infill(untrained, texts, settings)]
  wide = [g.to_json() for g in generate.infill(
      untrained, texts, generate.DecodeSettings(iterations=2, seed=5, batch_size=32))]
  assert [[s["ids"] for s in g["slots"]] for g in one] == [[s["ids"] for s in g["slots"]]
                                                           for g in wide]


def test_top_k_one_is_greedy_and_control_pieces_are_never_generated(untrained, tok):
  text = ["the [MASK*8] .", "[MASK] a", "b [MASK*2]"]  # the buckets of the greedy test above
  ids = lambda results: [s.ids for g in results for s in g.slots]
  greedy = generate.infill(untrained, text, generate.DecodeSettings(greedy=True, iterations=2))
  top1 = generate.infill(untrained, text, generate.DecodeSettings(top_k=1, iterations=2, seed=3))
  assert ids(top1) == ids(greedy)
  nucleus = generate.infill(untrained, text, generate.DecodeSettings(top_p=1e-6, iterations=2))
  assert ids(nucleus) == ids(greedy)  # only the most probable piece survives
  # A model whose MLM bias makes the control pieces by far the most probable still avoids them.
  control = [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id]
  params = jax.tree_util.tree_map(lambda x: x, untrained.params)
  params["predictions"]["bias"] = params["predictions"]["bias"].at[jnp.array(control)].set(50.0)
  biased = MaskedLM(untrained.config, params, tok)
  for settings in (generate.DecodeSettings(greedy=True, iterations=2),
                   generate.DecodeSettings(top_k=1, iterations=2)):
    out = generate.infill(biased, text, settings)
    assert not set(control) & {i for g in ids(out) for i in g}
    assert all(p < 1e-6 for g in out for s in g.slots for p in s.probabilities)  # the model's


def test_buckets_keep_compilations_few(untrained):
  # The buckets of the top-k test above: batch 4, 16 positions, 8 slot pieces.
  generate.infill(untrained, ["a [MASK] b", "the [MASK*2] of c", "[MASK] d"],
                  generate.DecodeSettings(top_k=1, iterations=2))
  compiled = untrained.compilations()
  # Other lengths in the same buckets, other numbers (temperature, iterations, seed): no new one.
  generate.infill(untrained, ["one two [MASK] three", "[MASK] x", "y [MASK*7] z"],
                  generate.DecodeSettings(top_k=1, iterations=3, temperature=0.7, seed=9))
  assert untrained.compilations() == compiled


# ----------------------------------------------------------------------------------------------
# Scoring.
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, ids):
  return model.apply({"params": params}, ids)  # no padding, no gathered positions


def reference_pll(lm, text):
  """Sum over pieces of log P(piece | rest), one masked copy at a time through model.apply."""
  tok = lm.tokenizer
  ids = np.array([[tok.cls_id] + tok.encode(text) + [tok.sep_id]], np.int32)
  total, per_piece = 0.0, []
  for p in range(1, ids.shape[1] - 1):
    masked = ids.copy()
    masked[0, p] = tok.mask_id
    logits = _apply(lm.model, lm.params, masked)["mlm_logits"][0, p]
    per_piece.append(float(jax.nn.log_softmax(logits)[ids[0, p]]))
    total += per_piece[-1]
  return total, per_piece


def test_pll_equals_one_masked_copy_at_a_time(untrained, trained):
  texts = ["the function returns a new list of items .", "hello", "a dictionary maps keys"]
  for lm in (untrained, trained):  # (three lengths: three compilations of the reference)
    scores = score.score(lm, texts, batch_size=4)  # copies of several sentences per batch
    for text, s in zip(texts, scores):
      pll, per_piece = reference_pll(lm, text)
      assert s.text == text and s.pieces == lm.tokenizer.tokenize(text)
      np.testing.assert_allclose(s.log_probs, per_piece, rtol=1e-4, atol=1e-4)
      np.testing.assert_allclose(s.pll, pll, rtol=1e-4, atol=1e-4)
      assert s.pseudo_perplexity == pytest.approx(math.exp(-s.pll / len(s.pieces)))
  assert score.corpus_pseudo_perplexity(scores) == pytest.approx(
      math.exp(-sum(s.pll for s in scores) / sum(len(s.pieces) for s in scores)))


def test_training_sentences_have_lower_pseudo_perplexity_than_shuffled(trained):
  rng = random.Random(0)
  shuffled = []
  for s in SENTENCES:
    words = s.split()
    while " ".join(words) == s:
      rng.shuffle(words)
    shuffled.append(" ".join(words))
  real, fake = score.score(trained, SENTENCES, 4), score.score(trained, shuffled, 4)
  for r, f in zip(real, fake):
    assert r.pseudo_perplexity < f.pseudo_perplexity, (r.text, f.text)
    assert r.pseudo_perplexity < 1.5  # memorized
  assert score.corpus_pseudo_perplexity(real) < score.corpus_pseudo_perplexity(fake) / 10


# ----------------------------------------------------------------------------------------------
# A converted Hugging Face checkpoint.
# ----------------------------------------------------------------------------------------------


def test_converted_hugging_face_checkpoint_matches_transformers(tmp_path, tok, capsys):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from albert_jax.interop import convert  # pylint: disable=g-import-not-at-top
  hf_config = transformers.AlbertConfig(
      vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=37, max_position_embeddings=32,
      hidden_act="gelu_new", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
      attn_implementation="eager")
  torch.manual_seed(0)
  hf = transformers.AlbertForMaskedLM(hf_config).eval()
  with torch.no_grad():
    for p in hf.parameters():
      p.normal_(0.0, 0.2)
  hf.save_pretrained(tmp_path)
  config, params = convert.load_hf(str(tmp_path), allow_missing_heads=True)  # no pooler/SOP
  lm = MaskedLM(config, params, tok, str(tmp_path))

  def hf_log_probs(ids):
    with torch.no_grad():
      return torch.log_softmax(hf(input_ids=torch.tensor([ids])).logits[0], -1).numpy()

  # One mask-predict iteration, greedy: the most probable non-control piece at every slot.
  [g] = generate.infill(lm, ["the [MASK*3] returns a [MASK] ."],
                        generate.DecodeSettings(greedy=True, iterations=1))
  template = generate.encode_template(tok, "the [MASK*3] returns a [MASK] .", 32)
  lp = hf_log_probs(list(template.ids))
  control = [tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id]
  lp[:, control] = -np.inf
  positions = [start + i for start, n in template.slots for i in range(n)]
  assert positions == [2, 3, 4, 7]
  assert [i for s in g.slots for i in s.ids] == [int(lp[p].argmax()) for p in positions]
  np.testing.assert_allclose([p for s in g.slots for p in s.probabilities],
                             [math.exp(lp[p].max()) for p in positions], rtol=1e-4)
  # PLL: transformers, one masked copy at a time.
  text = "the function returns a new list ."
  [s] = score.score(lm, [text])
  ids = [tok.cls_id] + tok.encode(text) + [tok.sep_id]
  expected = [hf_log_probs(ids[:p] + [tok.mask_id] + ids[p + 1:])[p, ids[p]]
              for p in range(1, len(ids) - 1)]
  np.testing.assert_allclose(s.log_probs, expected, atol=1e-4)
  with pytest.raises(InputError, match=r"max_position_embeddings=32"):
    generate.infill(lm, ["the [MASK*40] ."])
  # The same directory through predict's loader (every checkpoint kind it reads).
  loaded = loading.load(str(tmp_path), spm_model=tok.model_file)
  again = MaskedLM.from_loaded(loaded)
  assert again.spec == lm.spec
  np.testing.assert_allclose(score.score(again, [text])[0].log_probs, s.log_probs, atol=1e-6)
  # ... and through the command line.
  common = ["--checkpoint", str(tmp_path), "--spm_model", tok.model_file, "--format", "jsonl"]
  assert predict.main(["generate", "the [MASK*3] returns a [MASK] .", "--greedy",
                       "--iterations", "1", *common]) == 0
  [cli] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [s["ids"] for s in cli["slots"]] == [s.ids for s in g.slots]
  assert predict.main(["score", text, *common]) == 0
  [cli] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  np.testing.assert_allclose(cli["log_probs"], expected, atol=1e-4)
  finetuned = dataclasses.replace(loaded, params={"albert": loaded.params["albert"]},
                                  task=ml_collections.ConfigDict({"family": "glue"}))
  with pytest.raises(InputError, match=r"is fine-tuned for glue \(no MLM head\)"):
    MaskedLM.from_loaded(finetuned)


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("texts,message", [
    (["the list returns ."], r"input 1: no \[MASK\] slot"),
    (["ok [MASK]", "   "], r"input 2: empty text"),
    (["the [MASK*0] list"], r"bad slot '\[MASK\*0\]'"),
    (["the [MASK*x] list"], r"bad slot '\[MASK\*x\]'"),
    (["the [MASK*62] list"], r"input 1: 66 pieces .* exceed the model's "
     r"max_position_embeddings=64"),
])
def test_bad_infilling_input_is_one_line(untrained, texts, message):
  with pytest.raises(InputError, match=message) as err:
    generate.infill(untrained, texts)
  assert "\n" not in str(err.value) and isinstance(err.value, ValueError)


def test_other_bad_inputs_are_one_line(untrained, tok):
  cases = [
      (lambda: generate.continue_text(untrained, ["  "], 3), r"input 1: empty prompt"),
      (lambda: generate.continue_text(untrained, ["go"], 0), r"max_new_pieces=0"),
      (lambda: score.score(untrained, ["fine", ""]), r"input 2: empty text"),
      (lambda: score.score(untrained, ["word " * 70]), r"exceed the model's max_position"),
      (lambda: generate.DecodeSettings(strategy="beam"), r"strategy='beam': must be one of"),
      (lambda: generate.DecodeSettings(temperature=0.0), r"temperature=0.0: must be > 0"),
      (lambda: generate.DecodeSettings(top_p=1.5), r"top_p=1.5"),
      (lambda: generate.DecodeSettings(strategy="gibbs", iterations=2, burn_in=3), r"burn_in=3"),
      (lambda: generate.DecodeSettings(burn_in=2), r"burn_in=2: a gibbs setting"),
      (lambda: generate.infill(untrained, "the [MASK] ."), r"no input texts"),
      (lambda: score.score(untrained, ["a", "b"], where=["x"]), r"1 input labels for 2 inputs"),
      (lambda: MaskedLM(untrained.config, {"albert": untrained.params["albert"]}, tok, "ckpt"),
       r"ckpt has no MLM head \('predictions' parameters"),
  ]
  for call, message in cases:
    with pytest.raises(InputError, match=message) as err:
      call()
    assert "\n" not in str(err.value)
