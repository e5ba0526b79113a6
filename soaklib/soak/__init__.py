"""WATCHER soaks: the target daemon, its protocol, sampling, draw injection and orchestration."""
