import os
import subprocess
import sys

import pytest

from ragroute.cli import SUBCOMMANDS


def run(*args, **kw):
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-m", "ragroute.cli", *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_is_instant_and_imports_nothing_heavy():
    code = (
        "import sys; from ragroute.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'sklearn') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_documents_itself(name):
    out = run(name, "--help")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage: ragroute" in out.stdout


def test_data_gen_help_shows_each_nested_flags_help_and_default():
    # data-gen sets every part of the system (pipeline, engine, sampling) as nested flags; eval and serve take
    # theirs from the router file unless given (a whole --pipeline YAML).
    out = run("data-gen", "--help", env={"COLUMNS": "400"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines: dict[str, str] = {}  # flag -> its help (argparse puts a long flag's help on the next line)
    flag = None
    for line in out.stdout.split("settings (override the YAML")[1].splitlines()[1:]:
        if line.startswith("  --"):
            flag = line.split()[0]
            lines[flag] = line
        elif flag and line.startswith("    "):
            lines[flag] += " " + line.strip()
    assert "reciprocal-rank fusion constant" in lines["--pipeline.rrf-k"] and "(default: 60)" in lines["--pipeline.rrf-k"]
    assert "(default: null)" in lines["--engine.vllm.quantization"]
    assert "(default: [])" in lines["--sampling.stop"]
    assert len(lines) > 60 and all("(default" in line for line in lines.values())


def test_unknown_subcommand_exits_2():
    assert run("frobnicate").returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--config", "no/such.yaml", "q?"], "config file not found: no/such.yaml"),
        (["generate", "--model-config", "nosuch", "q?"], "unknown model config 'nosuch'"),
        (["generate", "--sampling.max-tokens", "-3", "q?"], "max_tokens must be >= 1"),
        (["generate", "--sampling.temperature", "hot", "q?"], "invalid value for 'sampling.temperature'"),
        (["generate", "   "], "the question is empty"),
        (["models", "prepare", "nosuch"], "unknown model config 'nosuch'"),
    ],
)
def test_bad_input_gives_message_and_exit_2_without_traceback(args, message):
    out = run(*args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_yaml_key_names_key(tmp_path):
    bad = tmp_path / "gen.yaml"
    bad.write_text("model_config: smollm2-135m\nsampling:\n  max_tokns: 5\n")
    out = run("generate", "--config", str(bad), "q?")
    assert out.returncode == 2 and "unknown key 'sampling.max_tokns'" in out.stderr


def test_generate_with_transformers_prints_answer_and_figures(tiny_model_dir, tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"name: tiny\npath: {tiny_model_dir}\ndtype: float32\n")
    out = run("generate", "--model-config", str(spec), "--engine", "transformers", "--sampling.max-tokens", "5",
              "--json", "What is aspirin?")
    assert out.returncode == 0, out.stderr
    import json

    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["model"] == "tiny" and figures["engine"] == "transformers"
    assert 1 <= figures["completion_tokens"] <= 5 and figures["prompt_tokens"] > 5
