"""chronodb tests."""
