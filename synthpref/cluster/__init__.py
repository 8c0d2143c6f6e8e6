"""Ray plumbing: starting or joining Ray, placing engines, replica pools, worker logs."""
