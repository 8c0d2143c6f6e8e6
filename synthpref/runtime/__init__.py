"""The job runtime every driver runs in: Ray, owned workers, output folder, rerun rule, metrics, logs."""
