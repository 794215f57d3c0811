import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # sonify_helpers (also importable by build subprocesses via PYTHONPATH)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
