"""Fine-tuning metrics against values computed by hand (derivations in the comments)."""

import json
import math

import pytest

from albert_jax.tasks import glue_metrics
from albert_jax.tasks import metrics as tm
from albert_jax.tasks import race
from albert_jax.tasks import squad_metrics


def test_classification_metrics():
  assert glue_metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
  preds, labels = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
  # tp=2, fp=1, fn=1, tn=1.
  assert glue_metrics.f1_binary(preds, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
  # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (2 - 1) / sqrt(3*3*2*2) = 1/6.
  assert glue_metrics.matthews_corrcoef(preds, labels) == pytest.approx(1 / 6)
  assert glue_metrics.matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0  # empty margin: defined as 0
  with pytest.raises(ValueError, match="equally long"):
    glue_metrics.accuracy([1, 0], [1])


def test_correlations():
  # x=[1,2,3], y=[1,2,5]: sum(xc*yc)=4, sum(xc^2)=2, sum(yc^2)=78/9 -> 12/sqrt(156).
  assert glue_metrics.pearson([1, 2, 3], [1, 2, 5]) == pytest.approx(12 / math.sqrt(156))
  # Ties share the mean rank: ranks x=[1,2.5,2.5,4], y=[1,3,2,4] -> 4.5/sqrt(4.5*5).
  assert glue_metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
  assert glue_metrics.spearman([3, 1, 2], [30, 10, 20]) == pytest.approx(1.0)


def test_glue_metric_sets():
  assert set(glue_metrics.glue_metrics("cola", [1, 0], [1, 0])) == {"accuracy", "mcc"}
  assert set(glue_metrics.glue_metrics("mrpc", [1, 0], [1, 0])) == {"accuracy", "f1"}
  assert set(glue_metrics.glue_metrics("qqp", [1, 0], [1, 0])) == {"accuracy", "f1"}
  assert set(glue_metrics.glue_metrics("mnli", [2, 0], [1, 0])) == {"accuracy"}
  stsb = glue_metrics.glue_metrics("stsb", [1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
  assert stsb["pearson"] == pytest.approx(12 / math.sqrt(156))
  assert stsb["spearman"] == pytest.approx(1.0)
  assert stsb["mse"] == pytest.approx(4 / 3)


def test_squad_normalization_and_v1():
  assert squad_metrics.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
  assert squad_metrics.normalize_answer("an apple a day") == "apple day"
  assert squad_metrics.exact_match_v1("the Eiffel tower", "Eiffel Tower") == 1.0
  # pred [eiffel, tower, in, paris] vs gold [eiffel, tower]: P=1/2, R=1 -> F1=2/3.
  assert squad_metrics.f1_v1("Eiffel tower in Paris", "the Eiffel Tower") == pytest.approx(2 / 3)
  gold = {"q1": ["Eiffel Tower", "tower"], "q2": ["the Eiffel Tower"], "q3": ["1889"]}
  preds = {"q1": "the Eiffel tower", "q2": "Eiffel tower in Paris"}  # q3 unanswered: scores 0
  out = squad_metrics.squad_v1_evaluate(gold, preds)
  assert out["exact_match"] == pytest.approx(100 / 3)
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


V2_GOLD = {"q1": ["1889"], "q2": [], "q3": ["Gustave Eiffel"]}
V2_PREDS = {"q1": "1889", "q2": "1990", "q3": "Eiffel"}
V2_NA = {"q1": 0.1, "q2": 0.8, "q3": 0.5}


def test_squad_v2_official_script():
  out = squad_metrics.squad_v2_evaluate(V2_GOLD, V2_PREDS, V2_NA)
  # Raw: q1 exact 1 f1 1; q2 (gold "") vs "1990": 0/0; q3 [gustave, eiffel] vs [eiffel]: 0, 2/3.
  assert out["exact"] == pytest.approx(100 / 3)
  assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
  assert (out["HasAns_exact"], out["HasAns_total"]) == (pytest.approx(50.0), 2)
  assert out["HasAns_f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
  assert (out["NoAns_exact"], out["NoAns_f1"], out["NoAns_total"]) == (0.0, 0.0, 1)
  # Threshold search, by increasing na_prob q1, q3, q2, starting from 1 (the no-answer count):
  # F1: +1 (2, t=.1), +2/3 (2.67, t=.5), -1 -> best 2.67/3 at 0.5; exact: +1 (2, t=.1), 0, -1.
  assert out["best_f1"] == pytest.approx(100 * (2 + 2 / 3) / 3)
  assert out["best_f1_thresh"] == 0.5
  assert out["best_exact"] == pytest.approx(200 / 3)
  assert out["best_exact_thresh"] == 0.1
  # na_prob above the 1.0 default threshold counts as a no-answer prediction.
  high = squad_metrics.squad_v2_evaluate(V2_GOLD, V2_PREDS, {"q1": 0.1, "q2": 2.0, "q3": 0.5})
  assert high["NoAns_exact"] == 100.0
  no_answers = squad_metrics.squad_v2_evaluate(V2_GOLD, {"q1": "", "q2": "", "q3": ""})
  assert no_answers["f1"] == pytest.approx(100 / 3)


def test_squad_v2_albert_protocol():
  out, final = squad_metrics.squad_v2_albert_eval(V2_GOLD, V2_PREDS, V2_NA)
  # Pass 1 picks the F1 threshold 0.5; pass 2 predicts "" where null score >= 0.5 (official
  # `score_diff < threshold` keeps the answer), i.e. for q2 and, at the boundary, q3.
  assert final == {"q1": "1889", "q2": "", "q3": ""}
  assert out["null_score_diff_threshold"] == 0.5
  assert out["exact"] == pytest.approx(200 / 3) and out["f1"] == pytest.approx(200 / 3)
  assert out["HasAns_f1"] == pytest.approx(50.0) and out["NoAns_f1"] == 100.0
  assert out["best_f1"] == pytest.approx(100 * (2 + 2 / 3) / 3)  # pass 1's, as reported


def test_race_accuracy():
  out = race.race_accuracy([0, 1, 2, 3], [0, 1, 0, 0], ["middle", "middle", "high", "high"])
  assert out == {"accuracy": 0.5, "accuracy_middle": 1.0, "accuracy_high": 0.0}
  assert "accuracy_high" not in race.race_accuracy([0], [0], ["middle"])


def test_markdown_table(tmp_path, capsys):
  runs = [{"task": "mnli", "model": "albert_base_v2", "workdir": "w1",
           "metric": "validation_matched/accuracy",
           "best": {"step": 300, "value": 0.8412,
                    "metrics": {"validation_matched/accuracy": 0.8412,
                                "validation_mismatched/accuracy": 0.8501}}},
          {"task": "squad_v1.1", "model": "tiny", "workdir": "w2", "metric": "validation/f1",
           "predict": {"test": {"test/accuracy": 0.625}},
           "best": {"step": 20, "value": 88.25, "metrics": {"validation/f1": 88.25,
                                                            "validation/exact_match": 80.5}}}]
  table = tm.markdown_table(runs)
  lines = table.strip().splitlines()
  assert len(lines) == 4 and lines[0].startswith("| task | model |")
  assert "| mnli | albert_base_v2 | w1 | 300 | validation_matched/accuracy 0.8412 |" in lines[2]
  assert "validation_mismatched/accuracy 0.8501" in lines[2]
  assert "validation/f1 88.25" in lines[3] and "validation/exact_match 80.50" in lines[3]
  assert lines[3].endswith("| test/accuracy 0.6250 |")
  for i, run in enumerate(runs):
    (tmp_path / f"r{i}").mkdir()
    (tmp_path / f"r{i}" / "metrics.json").write_text(json.dumps(run))
  assert tm.main([str(tmp_path / "*" / "metrics.json")]) == 0
  assert capsys.readouterr().out == table
