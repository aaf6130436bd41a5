"""Small widgets of the watch screen; each draws itself from a RunState and knows nothing else."""
