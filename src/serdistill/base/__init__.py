"""The base layer: errors, atomic writes and JSON, worker lifetimes, progress events: what every layer uses.

See docs/architecture.md."""
