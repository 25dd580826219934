"""The generate stage: the mini worlds in the real formats, drawn from shared latent concepts.

Import-free; :mod:`.generate` is the stage, :mod:`.plans` the shared plan machinery, :mod:`.concepts` the latent concepts.
"""
