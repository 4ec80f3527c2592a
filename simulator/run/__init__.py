"""The run: the per-day driver, the runtimes (in-process and Ray), sessions, offline protocols, tracking, the CLI.

The top layer: it wires the world, the metrics, serving and trainers together (docs/architecture.md)."""
