"""Knowledge distillation: extractor contract, knowledge store, records and the distiller."""
