"""The method layer: the config, the models, their training, Monte-Carlo dropout and the estimators (TSModel).

See docs/architecture.md."""
