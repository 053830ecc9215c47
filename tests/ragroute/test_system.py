"""The system spec: a stable hash of what decides answers, and resolution against an artifact's record."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from ragroute.engines.base import SamplingConfig
from ragroute.errors import UserError
from ragroute.models import ModelSpec
from ragroute.rag.config import PipelineConfig
from ragroute.system import SystemSpec, differences, resolve_system

MODEL = ModelSpec(name="teacher", path="ragroute:smollm2-135m-instruct")
PIPELINE = PipelineConfig(corpus="demo", final_n=3, max_chars=400)
SAMPLING = SamplingConfig(max_tokens=96, stop=["\n\n"], repetition_penalty=1.1)


def recorded() -> dict:
    return SystemSpec(MODEL, PIPELINE, SAMPLING).to_dict()


def test_hash_is_stable_and_covers_only_what_decides_answers():
    spec = SystemSpec(MODEL, PIPELINE, SAMPLING)
    assert spec.hash() == SystemSpec.from_dict(spec.to_dict()).hash() == SystemSpec(MODEL, PIPELINE, SAMPLING).hash()
    # Display names, index locations and logprobs do not change an answer; the prompt, the model and sampling do.
    same = [replace(spec, model=replace(MODEL, name="other", description="x")),
            replace(spec, pipeline=replace(PIPELINE, index_dir="/tmp/elsewhere", query_threads=4)),
            replace(spec, sampling=replace(SAMPLING, logprobs=8))]
    assert {s.hash() for s in same} == {spec.hash()}
    changed = [replace(spec, model=replace(MODEL, path="other/model")),
               replace(spec, pipeline=replace(PIPELINE, final_n=10)),
               replace(spec, pipeline=replace(PIPELINE, instruction="Answer.")),
               replace(spec, sampling=replace(SAMPLING, stop=[]))]
    assert len({s.hash() for s in changed} | {spec.hash()}) == 5


def test_unset_parts_come_from_the_record():
    resolved = resolve_system("student", None, None, None, recorded(), "router.skops", override=False)
    assert resolved.spec.hash() == SystemSpec(MODEL, PIPELINE, SAMPLING).hash() and resolved.differences == []
    assert resolved.info() == {"hash": resolved.spec.hash(), "from": "router.skops", "override": None}


def test_a_difference_is_an_error_naming_it_unless_overridden(caplog):
    served = PipelineConfig(corpus="demo")  # the default 10 documents x 800 characters
    with pytest.raises(UserError, match=r"pipeline.final_n: 10 vs 3.*pipeline.max_chars: 800 vs 400.*system_override"):
        resolve_system("student", None, served, None, recorded(), "router.skops", override=False)
    with caplog.at_level(logging.WARNING, logger="ragroute.system"):
        resolved = resolve_system("student", None, served, None, recorded(), "router.skops", override=True)
    assert resolved.spec.pipeline.final_n == 10 and "pipeline.final_n: 10 vs 3" in resolved.differences
    assert resolved.info()["override"] == resolved.differences and "system override" in caplog.text


def test_without_a_record_the_configured_or_default_system_runs():
    resolved = resolve_system("teacher", MODEL, None, None, None, None, override=False)
    assert resolved.spec.pipeline == PipelineConfig() and resolved.spec.sampling == SamplingConfig()
    with pytest.raises(UserError, match="no model configured"):
        resolve_system("teacher", None, None, None, None, None, override=False)


def test_differences_are_dotted_keys():
    assert differences({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 4}) == ["a.c: 2 vs 3", "d: None vs 4"]
