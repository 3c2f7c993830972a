"""memloc: find where a neural network stores what it memorized (Maini et al., ICML 2023)."""
