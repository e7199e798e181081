"""The runtime layer: where work runs (engines: this process, a local pool, Ray) and the command line.

See docs/architecture.md."""
