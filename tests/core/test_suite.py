"""Suite validation: valid suites load; invalid ones name the file, line and field, with a did-you-mean."""

from pathlib import Path

import pytest

from bench.errors import SuiteError, UsageError
from bench.suite import load_suite, parse_suite

GOOD = """\
name: demo
description: a test suite
model: {preset: tiny}
method:
  name: seer-attention-r
  token_budget: 128
matrix:
  context: [256, 512]
  batch: [1, 2]
  token_budget: [128, 256]
placements:
  baseline: {}
  baseline-torch: {kernels: torch}
  hetero: {relevancy: fpga, retrieval: fpga}
devices:
  gpu: {device: cpu}
  fpga: {mode: emulated, spec: u55c}
measure: {trials: 2, decode_tokens: 4, min_duration_s: 0.0}
"""


def test_valid_suite_expands_its_matrix():
    s = parse_suite(GOOD, "demo.yaml")
    cases = s.cases()
    assert len(cases) == 8
    assert cases[0].id == "context=256,batch=1,token_budget=128"
    assert cases[-1].params.token_budget == 256 and cases[-1].batch == 2
    assert list(s.placements) == ["baseline", "baseline-torch", "hetero"]
    assert s.placements["hetero"].device_of(__import__("bench.pipeline").pipeline.Step.RELEVANCY) == "fpga"
    assert s.to_dict()["experiments"]["seer-attention-r"]["model_shape"]["hidden"] == 256


@pytest.mark.parametrize("path", sorted(Path("suites").glob("**/*.yaml")))
def test_shipped_suites_are_valid(path):
    assert load_suite(path).cases()


def _error(text):
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "bad.yaml")
    return info.value


@pytest.mark.parametrize("old,new,line,field,words", [
    ("  token_budget: 128\n", "  token_budgt: 128\n", 6, "method.token_budgt", ["did you mean 'token_budget'"]),
    ("measure: {trials: 2,", "measure: {trails: 2,", 18, "measure.trails", ["did you mean 'trials'"]),
    ("name: demo\n", "name: demo\nplacement: {}\n", 2, "placement", ["did you mean 'placements'"]),
    ("  batch: [1, 2]", "  batch: [1, two]", 9, "matrix.batch[1]", ["expected an integer", "'two'"]),
    ("  batch: [1, 2]", "  batch: [1, 0]", 9, "matrix.batch[1]", [">= 1"]),
    ("  token_budget: [128, 256]", "  token_budget: [128, 100]", 10, "matrix.token_budget[1]",
     ["multiple of block_size"]),
    ("  name: seer-attention-r", "  name: seer-atention-r", 5, "method.name", ["did you mean 'seer-attention-r'"]),
    ("model: {preset: tiny}", "model: {preset: qwen3-9b}", 3, "model.preset", ["did you mean 'qwen3-8b'"]),
    ("model: {preset: tiny}", "model: {preset: tiny, layers: 5}", 3, "model.layers", ["expected 1..2"]),
    ("  hetero: {relevancy: fpga, retrieval: fpga}", "  hetero: {relevancy: fgpa, retrieval: fpga}", 14,
     "placements.hetero.relevancy", ["unknown device 'fgpa'"]),
    ("  hetero: {relevancy: fpga, retrieval: fpga}", "  hetero: {relevancy: fpga}", 14, "placements.hetero",
     ["only together"]),
    ("  hetero: {relevancy: fpga, retrieval: fpga}", "  hetero: {apply: fpga, relevancy: fpga, retrieval: fpga}", 14,
     "placements.hetero", ["apply"]),
    ("  fpga: {mode: emulated, spec: u55c}", "  fpga: {mode: emulate, spec: u55c}", 17, "devices.fpga.mode",
     ["expected one of emulated, analytic, hardware", "did you mean 'emulated'"]),
    ("  gpu: {device: cpu}", "  gpu: {device: tpu}", 16, "devices.gpu.device", ["expected auto, cpu, cuda"]),
    ("min_duration_s: 0.0}", "min_duration_s: -1}", 18, "measure.min_duration_s", [">= 0.0"]),
    ("min_duration_s: 0.0}", "min_duration_s: fast}", 18, "measure.min_duration_s", ["expected a number"]),
    ("measure: {trials: 2,", "measure: {trials: true,", 18, "measure.trials", ["expected an integer"]),
    ("  context: [256, 512]\n", "", 8, "matrix.context", ["missing required field"]),
    ("  context: [256, 512]", "  context: [256, 256]", 8, "matrix.context", ["distinct"]),
    ("  context: [256, 512]", "  context: 256", 8, "matrix.context", ["expected a list"]),
])
def test_invalid_suites_name_file_line_and_field(old, new, line, field, words):
    assert old in GOOD
    err = _error(GOOD.replace(old, new, 1))
    assert err.file == "bad.yaml"
    assert err.field == field, str(err)
    assert err.line == line, str(err)
    for w in words:
        assert w in str(err), str(err)
    assert str(err).startswith(f"bad.yaml:{line}: {field}:")


def test_yaml_syntax_error_has_a_line():
    err = _error("name: x\nmodel: [tiny\nmethod: y\n")
    assert err.line is not None and "invalid YAML" in str(err)


def test_missing_required_fields_and_empty_file():
    assert "missing required field" in str(_error("name: x\n"))
    assert "empty" in str(_error(""))
    assert "expected a mapping" in str(_error("- a\n- b\n"))


def test_unsafe_yaml_tags_are_rejected():
    err = _error(GOOD.replace("  batch: [1, 2]", "  batch: !!python/object/apply:os.system ['echo hi']"))
    assert err.line == 9 and "unsupported YAML tag" in str(err)
    assert "unsupported YAML tag" in str(_error("name: !!binary aGk=\n"))


def test_inline_model_shape_and_its_checks():
    text = GOOD.replace("model: {preset: tiny}",
                        "model: {hidden: 64, heads: 4, kv_heads: 2, head_dim: 16, ffn: 128, vocab: 100, layers: 1}")
    assert parse_suite(text, "x.yaml").experiments["seer-attention-r"].model.shape().heads == 4
    bad = text.replace("kv_heads: 2", "kv_heads: 3")
    assert "multiple of kv_heads" in str(_error(bad))
    partial = GOOD.replace("model: {preset: tiny}", "model: {hidden: 64}")
    assert "missing heads" in str(_error(partial))


def test_missing_suite_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such suite file"):
        load_suite(tmp_path / "nope.yaml")


MULTI = """\
name: multi
placements:
  baseline: {}
  hetero: {relevancy: fpga, retrieval: fpga}
experiments:
  small:
    model: {preset: tiny}
    method: {name: seer-attention-r, token_budget: 128}
    matrix: {context: [256], batch: [1, 2]}
  large:
    model: {preset: tiny, layers: 1}
    method: {name: seer-attention-r, token_budget: 256}
    matrix: {context: [512]}
    placements: {baseline: {}}
"""


def test_suite_with_several_experiments():
    s = parse_suite(MULTI, "m.yaml")
    assert list(s.experiments) == ["small", "large"]
    ids = [c.id for c in s.cases()]
    assert ids == ["small/context=256,batch=1", "small/context=256,batch=2", "large/context=512,batch=1"]
    assert [c.experiment for c in s.cases()] == ["small", "small", "large"]
    assert list(s.experiments["small"].placements) == ["baseline", "hetero"]
    assert list(s.experiments["large"].placements) == ["baseline"]
    assert s.experiments["large"].model.layers == 1


def test_experiment_errors_name_their_path():
    err = _error(MULTI.replace("token_budget: 256}", "token_budgit: 256}"))
    assert err.field == "experiments.large.method.token_budgit" and err.line == 12
    err = _error(MULTI.replace("    matrix: {context: [512]}\n", "    matrix: {context: [512]}\n    matrx: {}\n"))
    assert err.field == "experiments.large.matrx" and "did you mean 'matrix'" in str(err)
    err = _error(MULTI.replace("name: multi\n", "name: multi\nmodel: tiny\n"))
    assert err.field == "model" and "inside each experiment" in str(err)
