"""The scaler: one control loop that sizes every job type's workers to its queue."""
