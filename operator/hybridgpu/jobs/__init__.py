"""The InferenceJob lifecycle as pure functions over status dicts: conditions, phase, attempts."""
