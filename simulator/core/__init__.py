"""The core: the log schema, id maps, typed configuration and scenarios, the run window, co-diversion.

It imports nothing else of the project; every other layer builds on it (docs/architecture.md, "Layers")."""
