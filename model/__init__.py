"""GenDeF in PyTorch.

Importing the package turns on Intel MKL's conditional numerical reproducibility (``MKL_CBWR=AUTO``) unless the
environment sets it: without it, MKL's matrix products of a row or two (the mapping networks' layers at batch 1)
sum in an order that depends on how the input happens to be aligned in memory, so the same job run twice in one
process could differ in the last bits (measured: 236 of 480 products of unaligned copies differed; none with it).
MKL reads the setting at its first matrix product, so this must be imported before any torch computation.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO")
