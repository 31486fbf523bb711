"""Behavior science shared by the session kinds (pure numpy/scipy/pandas)."""
