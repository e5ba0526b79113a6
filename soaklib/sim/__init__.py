"""Embedded simulators: real programs that speak the real protocols (dx-runner, WATCHER, LLM)."""
