"""The WATCHER file protocol: profiles, request files, the decision-log stream, the
protocol check, synthetic draws and the operator's files."""
