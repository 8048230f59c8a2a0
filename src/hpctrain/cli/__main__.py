"""`python -m hpctrain.cli` (what `hpctrain doctor --on-node` runs on a compute node)."""

from hpctrain.cli import run

run()
