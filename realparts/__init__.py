"""Real parts for the tests and the benchmarks: processes and roots that they start themselves
(no mocks). Not shipped: pyproject.toml lists the packages it installs."""
