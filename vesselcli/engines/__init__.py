"""Inference backends behind one interface (see ``base.Engine``); imported lazily."""
