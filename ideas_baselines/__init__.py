"""Algorithms and algorithm parts that stable-baselines3 lacks (HER relabelling buffer, later HAC)."""
