"""Built-in, procedurally generated datasets (no downloads) and loaders for real ones."""
