"""Processes: starting, attaching to, halting and killing a target; its process tree."""
