"""The data layer: corpora -> manifest -> audio -> features -> normalised rows, and how large
matrices live on disk (FeatureRows: the one way the layers above read them).

See docs/architecture.md."""
