"""The model repository: scanning its folders, loading versions, and the registry that serves
them and swaps them atomically."""
