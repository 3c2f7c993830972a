"""The batch half of memloc: `python -m precompute run ...` trains and analyses, writing run directories."""
