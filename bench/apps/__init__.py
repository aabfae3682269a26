"""Task definitions, one module per framework, each imported by that framework's worker."""
