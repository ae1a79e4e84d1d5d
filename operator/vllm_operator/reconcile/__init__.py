"""Level-based reconciles: read through `clients`, decide with `model`, apply, converge and
write status. `Reconciler` is the one entry point the handlers and background loops call."""
