"""Analysis of a trial dataset folder (simulated or real photos): embed, reduce, model, report."""
