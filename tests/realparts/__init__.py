"""Real parts for the tests: processes and roots that the suite starts itself (no mocks)."""
