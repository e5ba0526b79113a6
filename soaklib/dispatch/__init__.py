"""Multi-provider dispatch rounds through the dx-runner command surface."""
