"""The study layer: the paper's protocol: settings, trials, results, statistics, findings and the report.

See docs/architecture.md."""
