"""The simulated world: ground-truth response, creator dynamics, the platform's state, oracles and log replay.

Imports only :mod:`simulator.core`. No arm ever sees it; the driver is the only caller."""
