"""One recipe per real-data source listed in shared/spec/data-sources.md."""
