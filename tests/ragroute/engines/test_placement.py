"""GPU placement of in-process vLLM engines (``engine.vllm.devices``, ``engine.vllm.mps_thread_percentage``): what can be
checked without a GPU. The placement itself (two engines on two cards, two on one card under MPS) runs in
bench/gpu_run.sh on the device (docs/benchmarks/gpu.md)."""

from __future__ import annotations

import os

import pytest

from ragroute.engines.base import EngineConfig, create_engine
from ragroute.errors import UserError
from ragroute.models import load_model_spec


def test_devices_map_to_the_gpus_this_process_sees():
    from ragroute.engines.vllm_engine import physical_devices

    assert physical_devices([1], None, 2) == "1"
    assert physical_devices([1, 0], None, 4) == "1,0"
    # Indices count among the GPUs already visible to this process, as torch and vLLM count them.
    assert physical_devices([1], "4,6", 2) == "6"
    assert physical_devices([0], "GPU-a1b2, GPU-c3d4", 2) == "GPU-a1b2"
    with pytest.raises(UserError, match=r"sees 2 GPU\(s\).*CUDA_VISIBLE_DEVICES=4,6.*\[2\]"):
        physical_devices([2], "4,6", 2)
    with pytest.raises(UserError, match=r"sees 1 GPU"):
        physical_devices([0, 1], None, 1)


def test_devices_need_one_gpu_per_replica_and_shard():
    assert EngineConfig.of(devices=[3]).vllm.gpu_ids() == [3]
    assert EngineConfig.of(tensor_parallel_size=2).vllm.gpu_ids() == [0, 1]
    assert EngineConfig.of(tensor_parallel_size=2, devices=[2, 3]).vllm.devices == [2, 3]
    with pytest.raises(ValueError, match="names 1 GPU"):
        EngineConfig.of(tensor_parallel_size=2, devices=[0])
    with pytest.raises(ValueError, match="twice"):
        EngineConfig.of(tensor_parallel_size=2, devices=[1, 1])


def test_devices_on_a_machine_without_gpus_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec = load_model_spec("qwen2-tiny-shape")
    with pytest.raises(UserError, match="no CUDA GPU"):
        create_engine(spec, EngineConfig.of("vllm", devices=[0], enforce_eager=True))


def _report_visible(queue) -> None:
    queue.put((os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")))


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_engine_process_started_inside_placement_sees_only_its_devices(monkeypatch, method):
    """vLLM starts its engine-core process with the context of ``vllm.utils.system_utils.get_mp_context`` while the
    engine is built; a process started that way inside ``placed_on`` must see the engine's GPUs, and this process
    must get its own setting back. (No GPU here: the GPU count is given, the process start is vLLM's own.)"""
    import torch
    from vllm.utils.system_utils import get_mp_context

    from ragroute.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "has_cuda", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", method)
    context = get_mp_context()
    queue = context.Queue()
    with vllm_engine.placed_on(EngineConfig.of(devices=[1])):
        child = context.Process(target=_report_visible, args=(queue,))
        child.start()
    child.join(60)
    assert queue.get(timeout=10) == ("7", None)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"
    with vllm_engine.placed_on(EngineConfig.of(devices=[0], mps_thread_percentage=40)):
        child = context.Process(target=_report_visible, args=(queue,))
        child.start()
    child.join(60)
    assert queue.get(timeout=10) == ("5", "40")
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in os.environ
    with vllm_engine.placed_on(EngineConfig()):  # unset: the process's own GPUs, untouched
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7"


def test_mps_share_reaches_the_engine_process_and_warns_without_a_daemon(monkeypatch, tmp_path, caplog):
    """``engine.vllm.mps_thread_percentage`` is the engine process's CUDA_MPS_ACTIVE_THREAD_PERCENTAGE while it is
    built (no GPU needed to set it); with no MPS daemon's control pipe in sight it warns that it does nothing."""
    from ragroute.engines import vllm_engine
    from ragroute.hardware import mps_active

    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "100")
    assert not mps_active()
    with caplog.at_level("WARNING", logger="ragroute.engines"):
        with vllm_engine.placed_on(EngineConfig.of(mps_thread_percentage=30)):
            assert os.environ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "30"
    assert os.environ["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "100"
    assert "no effect: no CUDA MPS daemon" in caplog.text
    (tmp_path / "control").touch()
    caplog.clear()
    assert mps_active()
    with caplog.at_level("WARNING", logger="ragroute.engines"), vllm_engine.placed_on(
            EngineConfig.of(mps_thread_percentage=30)):
        pass
    assert "no effect" not in caplog.text
    for bad in (0, 101):
        with pytest.raises(ValueError, match="mps_thread_percentage must be in 1..100"):
            EngineConfig.of(mps_thread_percentage=bad)
