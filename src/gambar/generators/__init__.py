"""One folder per family of generators: its networks, its loss, its Pipeline."""
