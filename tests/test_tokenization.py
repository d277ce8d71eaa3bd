"""Tokenization: official ALBERT preprocessing, parity with transformers' AlbertTokenizer, the trainer."""

from __future__ import annotations

import shutil
import unicodedata

import pytest

from albert_jax.data import tokenization

# Tricky inputs from the issue. None contains "<digit>," so ids must equal Hugging Face's.
PARITY_STRINGS = [
    "Héllo Wörld, café naïve façade",
    "Version 3.0 is out. Pi is 3.14159!",
    "日本語のテキスト 中文 한국어",
    "emoji 😀 🎉 and symbols £5 €10 ½ ² ﬁ",
    "  many   spaces\t\tand\ttabs \n newline  ",
    "",
    "ÅNGSTRÖM Ünïcödé ÉCOLE",
    "e.g. (parentheses) - dashes – and ... ellipses",
]
# LaTeX-style quotes: kept by the official preprocessing (and ours), turned into " by Hugging Face.
QUOTE_STRINGS = ["``Quoted'' and \"plain\" quotes, `single' ones", "he said ``no''"]
# Strings with a "<digit>," piece: where we re-split (official behaviour) and HF v5 does not.
DIGIT_COMMA_STRINGS = ["Released in 3.0, then 1990, and 12,345 copies", "x1, y2, z3,", "a 2,b"]


@pytest.fixture(scope="module")
def tokenizer(spm_model):
  return tokenization.SentencePieceTokenizer(spm_model)


@pytest.fixture(scope="module")
def hf_style(spm_model):
  """Our tokenizer with preprocessing="huggingface"."""
  return tokenization.SentencePieceTokenizer(spm_model, preprocessing="huggingface")


def _official_preprocess_text(inputs, lower):
  """google-research/albert `tokenization.preprocess_text(inputs, remove_space=True, lower)` under
  Python 3 (its only normalization: no quote replacement, accents always stripped)."""
  outputs = " ".join(inputs.strip().split())
  outputs = unicodedata.normalize("NFKD", outputs)
  outputs = "".join([c for c in outputs if not unicodedata.combining(c)])
  return outputs.lower() if lower else outputs


def _hf_slow_pieces(sp, inputs, do_lower_case=True, keep_accents=False):
  """transformers' sentencepiece `AlbertTokenizer` (up to 4.x): `preprocess_text`, then `_tokenize`
  with the digit+comma re-split as XLNet wrote it."""
  outputs = " ".join(inputs.strip().split())
  outputs = outputs.replace("``", '"').replace("''", '"')
  if not keep_accents:
    outputs = unicodedata.normalize("NFKD", outputs)
    outputs = "".join([c for c in outputs if not unicodedata.combining(c)])
  if do_lower_case:
    outputs = outputs.lower()
  new_pieces = []
  for piece in sp.encode(outputs, out_type=str):
    if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
      cur_pieces = sp.encode(piece[:-1].replace("\u2581", ""), out_type=str)
      if piece[0] != "\u2581" and cur_pieces[0][0] == "\u2581":
        if len(cur_pieces[0]) == 1:
          cur_pieces = cur_pieces[1:]
        else:
          cur_pieces[0] = cur_pieces[0][1:]
      cur_pieces.append(piece[-1])
      new_pieces.extend(cur_pieces)
    else:
      new_pieces.append(piece)
  return new_pieces


ALL_STRINGS = PARITY_STRINGS + QUOTE_STRINGS + DIGIT_COMMA_STRINGS


@pytest.fixture(scope="module")
def hf_tokenizer(spm_model):
  """transformers v5 AlbertTokenizer (a `tokenizers` Unigram pipeline) with the model's pieces/scores."""
  transformers = pytest.importorskip("transformers")
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  with open(spm_model, "rb") as f:
    proto.ParseFromString(f.read())
  return transformers.AlbertTokenizer(
      vocab=[(p.piece, p.score) for p in proto.pieces],
      _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap)


@pytest.fixture(scope="module")
def hf_tokenizer_from_folder(spm_model, tmp_path_factory):
  """The same, built the usual way: `from_pretrained` on a folder holding spiece.model."""
  transformers = pytest.importorskip("transformers")
  folder = tmp_path_factory.mktemp("hf_tok")
  shutil.copy(spm_model, folder / "spiece.model")
  return transformers.AlbertTokenizer.from_pretrained(str(folder))


def test_preprocess_text_official_rules():
  assert tokenization.preprocess_text("  A  b\t\nC ") == "a b c"
  assert tokenization.preprocess_text("``Hi''") == "``hi''"  # the official code keeps them
  assert tokenization.preprocess_text("Café Naïve") == "cafe naive"
  assert tokenization.preprocess_text("Café", keep_accents=True) == "café"
  assert tokenization.preprocess_text("Café", lower=False) == "Cafe"
  assert tokenization.preprocess_text("") == ""


def test_is_start_piece_matches_official_rule():
  assert tokenization.is_start_piece("\u2581the")
  assert tokenization.is_start_piece("<unk>")
  assert tokenization.is_start_piece(",")
  assert tokenization.is_start_piece("90")  # digits are not a-z: a whole word on their own
  assert tokenization.is_start_piece("é")
  assert not tokenization.is_start_piece("ing")
  assert not tokenization.is_start_piece("s.")  # letters + punctuation continue a word


def test_special_ids(tokenizer):
  assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
          tokenizer.mask_id) == (0, 1, 2, 3, 4)
  assert tokenizer.convert_ids_to_tokens(range(5)) == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]


@pytest.mark.parametrize("text", PARITY_STRINGS)
def test_ids_equal_hf_albert_tokenizer(tokenizer, hf_tokenizer, text):
  assert tokenizer.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)


def _has_digit_comma_piece(pieces):
  return any(len(p) > 1 and p[-1] == "," and p[-2].isdigit() for p in pieces)


@pytest.mark.parametrize("preprocessing", tokenization.PREPROCESSING)
def test_digit_comma_resplit_is_the_only_difference(spm_model, hf_tokenizer, preprocessing):
  """Against transformers v5 (no re-split), with either preprocessing."""
  tokenizer = tokenization.SentencePieceTokenizer(spm_model, preprocessing=preprocessing)
  triggered = 0
  for text in DIGIT_COMMA_STRINGS:
    ours = tokenizer.tokenize(text)
    hf_ids = hf_tokenizer.encode(text, add_special_tokens=False)
    theirs = hf_tokenizer.convert_ids_to_tokens(hf_ids)
    assert not _has_digit_comma_piece(ours)
    if not _has_digit_comma_piece(theirs):  # this vocabulary has no "<digit>," piece for this text
      assert tokenizer.encode(text) == hf_ids
      continue
    triggered += 1
    assert tokenizer.encode(text) != hf_ids
    assert "".join(ours) == "".join(theirs)  # same text, only cut differently
    # Where HF has "<digit>,", we have the digits then a separate ","; everything else is equal.
    assert ours.count(",") == theirs.count(",") + sum(_has_digit_comma_piece([p]) for p in theirs)
  assert triggered, "no test string produced a <digit>, piece: the difference went untested"


@pytest.mark.parametrize("text", QUOTE_STRINGS)
def test_latex_quotes_are_kept_where_hf_replaces_them(tokenizer, hf_style, hf_tokenizer, text):
  assert "``" in tokenizer.preprocess(text) and "''" in tokenizer.preprocess(text)
  assert tokenizer.encode(text) == tokenizer.sp.encode(tokenizer.preprocess(text))
  hf_ids = hf_tokenizer.encode(text, add_special_tokens=False)
  assert hf_ids == tokenizer.sp.encode(tokenizer.preprocess(
      text.replace("``", '"').replace("\'\'", '"')))
  assert tokenizer.encode(text) != hf_ids
  assert hf_style.encode(text) == hf_ids and '"' in hf_style.preprocess(text)


@pytest.mark.parametrize("text", ALL_STRINGS)
def test_official_preprocessing_is_the_official_code(tokenizer, text):
  """Against google-research/albert `preprocess_text` + `encode_pieces` (Python 3) on quotes,
  accents, digits with commas, CJK and whitespace: the same pieces, except that the official code
  adds a "▁" inside a word ending in "<digit>," (the module docstring's intended difference)."""
  pre = _official_preprocess_text(text, lower=True)
  assert tokenizer.preprocess(text) == pre
  raw = tokenizer.sp.encode(pre, out_type=str)
  official = _official_python3_pieces(tokenizer.sp, raw)
  in_word = sum(_has_digit_comma_piece([p]) and not p.startswith("\u2581") for p in raw)
  if in_word:  # the same text, with one "▁" fewer per such piece
    ours = "".join(tokenizer.tokenize(text))
    assert ours.replace("\u2581", "") == "".join(official).replace("\u2581", "")
    assert "".join(official).count("\u2581") - ours.count("\u2581") == in_word
  else:
    assert tokenizer.tokenize(text) == official


@pytest.mark.parametrize("text", ALL_STRINGS)
@pytest.mark.parametrize("cased", [False, True])
def test_huggingface_preprocessing_is_the_hf_sentencepiece_tokenizer(spm_model, text, cased):
  """preprocessing="huggingface" gives exactly the pieces of transformers' sentencepiece
  AlbertTokenizer (4.x), with its do_lower_case / keep_accents options."""
  ours = tokenization.SentencePieceTokenizer(spm_model, preprocessing="huggingface",
                                             do_lower_case=not cased, keep_accents=cased)
  assert ours.tokenize(text) == _hf_slow_pieces(ours.sp, text, do_lower_case=not cased,
                                                keep_accents=cased)


@pytest.mark.parametrize("text", PARITY_STRINGS + QUOTE_STRINGS)
def test_huggingface_preprocessing_ids_equal_transformers_v5(hf_style, hf_tokenizer, text):
  assert hf_style.encode(text) == hf_tokenizer.encode(text, add_special_tokens=False)


def test_preprocessing_choice_is_checked(spm_model, tmp_path, corpus_files):
  with pytest.raises(ValueError, match=r"preprocessing='hf': allowed: \['official', 'huggingface'\]"):
    tokenization.SentencePieceTokenizer(spm_model, preprocessing="hf")
  with pytest.raises(ValueError, match=r"config field 'data.preprocessing'='xlnet': allowed"):
    tokenization.text_options({"preprocessing": "xlnet"})
  assert tokenization.text_options({}) == {"do_lower_case": True, "keep_accents": False,
                                           "preprocessing": "official"}
  with pytest.raises(SystemExit):  # absl's enum: one usage line naming the flag
    tokenization.main(["train", f"--input={corpus_files[0]}", f"--output={tmp_path / 'm'}",
                       "--preprocessing=hf"])
  assert not list(tmp_path.iterdir())


def test_vocabulary_trained_with_the_chosen_preprocessing(tmp_path, corpus_files):
  """The trainer sees the text as the tokenizer will: with "huggingface" the backquote, which
  appears only in `` here, is no character of the vocabulary."""
  corpus = tmp_path / "quotes.txt"
  text = open(corpus_files[0], encoding="utf-8").read().replace("`", "")
  corpus.write_text(text + "".join(f"he said ``word{i % 7}'' today\n" for i in range(100)))
  def pieces(preprocessing):
    assert tokenization.main(["train", f"--input={corpus}", f"--output={tmp_path / preprocessing}",
                              "--vocab_size=300", f"--preprocessing={preprocessing}"]) == 0
    tok = tokenization.SentencePieceTokenizer(str(tmp_path / f"{preprocessing}.model"))
    return tok.convert_ids_to_tokens(range(tok.vocab_size))
  assert any("`" in p for p in pieces("official"))
  assert not any("`" in p for p in pieces("huggingface"))


@pytest.mark.parametrize("text", ALL_STRINGS)
def test_ids_equal_raw_sentencepiece_after_preprocessing(tokenizer, text):
  pre = tokenizer.preprocess(text)
  raw = tokenizer.sp.encode(pre, out_type=str)
  if _has_digit_comma_piece(raw):
    assert "".join(tokenizer.tokenize(text)) == "".join(raw)
  else:
    assert tokenizer.encode(text) == tokenizer.sp.encode(pre)


def test_hf_from_pretrained_tokenizes_user_symbols_as_sentencepiece(tokenizer,
                                                                  hf_tokenizer_from_folder):
  """transformers 5.25 (pinned in requirements-test.txt) keeps the user-defined symbols
  ( ) " - . – £ € as SentencePiece does; an earlier v5 release, which the suite ran with before
  the pin, turned them into added tokens and split the text around them ("a (b) c" -> "(", "▁b";
  docs/data.md)."""
  hf = hf_tokenizer_from_folder
  text = "a (b) c"
  assert tokenizer.tokenize(text) == ["\u2581a", "\u2581", "(", "b", ")", "\u2581c"]
  assert hf.convert_ids_to_tokens(hf.encode(text, add_special_tokens=False)) == (
      tokenizer.tokenize(text))
  plain = "many spaces and tabs"
  assert tokenizer.encode(plain) == hf.encode(plain, add_special_tokens=False)


def test_digit_comma_keeps_word_start_marker(tokenizer):
  pieces = tokenizer.tokenize("in 1990, it")
  comma = pieces.index(",")
  assert pieces[comma - 1].isdigit() or pieces[comma - 1].lstrip("\u2581").isdigit()
  # The number's first piece still starts a word, as in the official code.
  number = [p for p in pieces[:comma] if p.lstrip("\u2581")[:1].isdigit()]
  assert number[0].startswith("\u2581")


def _official_python3_pieces(sp, pieces):
  """google-research/albert `encode_pieces`' digit+comma branch as it runs under Python 3:
  `piece[0] != SPIECE_UNDERLINE` compares a str with bytes (always true) and
  `cur_pieces[0][0] == SPIECE_UNDERLINE` likewise (always false), so the marker is never removed."""
  out = []
  for piece in pieces:
    if len(piece) > 1 and piece[-1] == "," and piece[-2].isdigit():
      out += sp.encode(piece[:-1].replace("\u2581", ""), out_type=str) + [","]
    else:
      out.append(piece)
  return out


def test_digit_comma_inside_a_word_gets_no_marker(tokenizer):
  # "x1," -> "▁x" "1," in SentencePiece: the re-split keeps "1" inside the word; the official code
  # under Python 3 adds a "▁" there (the intended difference of the module docstring).
  raw = tokenizer.sp.encode(tokenizer.preprocess("x1, y2"), out_type=str)
  assert raw[:2] == ["\u2581x", "1,"], raw  # the case this test is about
  assert tokenizer.tokenize("x1, y2")[:3] == ["\u2581x", "1", ","]
  assert _official_python3_pieces(tokenizer.sp, raw)[:3] == ["\u2581x", "\u25811", ","]


def test_encode_batch_matches_encode(tokenizer):
  texts = PARITY_STRINGS + QUOTE_STRINGS + DIGIT_COMMA_STRINGS
  assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]


def test_keep_accents_and_case_options(spm_model):
  cased = tokenization.SentencePieceTokenizer(spm_model, do_lower_case=False, keep_accents=True)
  assert cased.preprocess("Café") == "Café"
  assert tokenization.SentencePieceTokenizer(spm_model).preprocess("Café") == "cafe"


def test_missing_model_file_is_named(tmp_path):
  with pytest.raises(tokenization.TokenizerError, match="nope.model"):
    tokenization.SentencePieceTokenizer(str(tmp_path / "nope.model"))


def test_non_sentencepiece_file_is_named(tmp_path):
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"this is not a protobuf")
  with pytest.raises(tokenization.TokenizerError, match="bad.model.*not a SentencePiece model"):
    tokenization.SentencePieceTokenizer(str(bad))


def test_train_cli_official_layout(tmp_path, corpus_files):
  rc = tokenization.main(["train", f"--input={corpus_files[0]}", "--vocab_size=300",
                          f"--output={tmp_path / 'm'}"])
  assert rc == 0
  tok = tokenization.SentencePieceTokenizer(str(tmp_path / "m.model"))
  assert tok.vocab_size == 300
  pieces = tok.convert_ids_to_tokens(range(13))
  assert pieces == ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]",
                    "(", ")", '"', "-", ".", "\u2013", "\u00a3", "\u20ac"]
  assert tok.encode("The Python tutorial.")


def test_train_cli_rejects_unmatched_glob(tmp_path):
  with pytest.raises(SystemExit):
    tokenization.main(["train", f"--input={tmp_path}/*.txt", f"--output={tmp_path / 'm'}"])
