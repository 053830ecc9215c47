#!/usr/bin/env bash
# CI: the wheel works without the source tree. Builds a wheel from the tracked files, installs it into a fresh
# venv whose dependencies come from the repository's .venv (a .pth to its site-packages: offline, seconds; the
# .venv's own editable-install hooks are not run, so the checkout is not importable), and from an empty
# directory runs `ragroute --help`, `ragroute models list`, a config load by its configs/ path and the
# bundled PubMedQA file.
#
#   bash scripts/check_wheel.sh          # uses .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-$repo/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Build from a copy of the repository's files, so no stale build/ directory leaks into the wheel.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null \
    | tar -xf - -C "$work/src"
"$python" -m pip --quiet --disable-pip-version-check wheel --no-deps --no-build-isolation \
    -w "$work/dist" "$work/src" >/dev/null
wheel=$(ls "$work"/dist/ragroute-*.whl)

"$python" -m venv --without-pip "$work/venv"
"$python" -m pip --quiet --disable-pip-version-check --python "$work/venv/bin/python" install --no-deps "$wheel"
deps=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/_ragroute_ci_deps.pth"

cd "$work"
export PYTHONPATH=
"$work/venv/bin/ragroute" --help >/dev/null
"$work/venv/bin/ragroute" models list
"$work/venv/bin/python" - "$repo" <<'PY'
import sys
from pathlib import Path

import evaluation
import ragroute
from evaluation.config import EvalConfig
from ragroute.config import CONFIG_ROOT, load_config, resolve_path, shared_pubmedqa_dev
from ragroute.rag.corpus import load_questions

repo = Path(sys.argv[1]).resolve()
for module in (ragroute, evaluation):
    where = Path(module.__file__).resolve()
    assert repo not in where.parents, f"{module.__name__} imported from the source tree: {where}"
assert CONFIG_ROOT.parent == Path(ragroute.__file__).parent, CONFIG_ROOT
found = resolve_path("configs/eval/smollm2-135m_demo.yaml")
assert found.parent.parent == CONFIG_ROOT, found
assert load_config(EvalConfig, "configs/eval/smollm2-135m_demo.yaml") != EvalConfig()
shapes = sorted(p.relative_to(CONFIG_ROOT) for p in CONFIG_ROOT.rglob("*.json"))
source = sorted(p.relative_to(repo / "configs") for p in (repo / "configs").rglob("*.json"))
assert shapes == source, f"configs/ files missing from the wheel: {set(source) - set(shapes)}"
from ragroute.qwen_tokenizer import chat_template  # Qwen2.5-Instruct's template ships as package data

assert "You are Qwen, created by Alibaba Cloud." in chat_template()
n = len(load_questions(str(shared_pubmedqa_dev())).items)
assert n == 500, n
print(f"wheel check: ragroute from {Path(ragroute.__file__).parent}, configs in {CONFIG_ROOT}, {n} PubMedQA questions")
PY
echo "wheel check passed: $(basename "$wheel")"
