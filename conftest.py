"""pytest's entry: the fixtures are in tests/common_fixtures.py, helpers in tests/support.py."""

pytest_plugins = ["common_fixtures"]  # (a plugin named "fixtures" is pytest's own)
