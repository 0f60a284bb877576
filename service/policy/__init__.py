"""Per-model traffic policy: labels and splits, shadow, rollback, the result cache, drift."""
