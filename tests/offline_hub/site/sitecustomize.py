"""Installs tests/offline_hub's synthetic datasets in child processes started with its subprocess_env()."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import offline_hub  # noqa: E402

offline_hub.install()
