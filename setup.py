"""Packaging that pyproject.toml cannot express: the top-level ``configs/`` directory (where users and
developers keep ``configs/<stage>/<run>.yaml``) ships inside the wheel as the package data directory
``ragroute/configs``, where :func:`ragroute.config.config_root` finds it through ``importlib.resources``.
Everything else (metadata, dependencies, scripts) is in pyproject.toml."""

from setuptools import find_packages, setup

PACKAGES = find_packages(include=["ragroute*", "data_gen*", "train*", "router*", "serve*", "evaluation*", "index*"])

setup(
    packages=[*PACKAGES, "ragroute.configs"],
    package_dir={"ragroute.configs": "configs"},
    package_data={
        "ragroute": ["data/demo/*.jsonl", "data/demo/*.md", "data/pubmedqa/*.json", "data/pubmedqa/*.md",
                     "data/pubmedqa/LICENSE"],
        "ragroute.configs": ["**/*.yaml", "**/*.yml", "**/*.json"],
    },
)
