"""Observing a target: metric sources (process tree, NVML, files and logs, LLM health,
JSON probes), the drift-free schedule and the recorder loop shared by every soak and ``soak monitor``."""
