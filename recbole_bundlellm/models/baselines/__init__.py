"""Baselines without an LLM: Freq, Pairwise, RecBoleBundler and the neural ones (BBPR, POG, BGN on
the shared :mod:`.neural` base)."""
