"""Signoff artifacts (JSON + Markdown) and figures."""
