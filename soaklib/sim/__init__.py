"""Embedded simulators: real programs that speak the real protocols (dx-runner, WATCHER, LLM server).

Each one runs stand-alone (``python -m soaklib.sim.<name> ...``) and imports nothing from the
rest of soaklib, so the toolkit can be exercised end to end on a fresh machine.
"""
