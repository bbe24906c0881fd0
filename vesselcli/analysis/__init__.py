"""Figures computed from the written outputs: vessel morphology and the batch HTML report."""
