"""Every part's fixtures (tests/fixtures/*.py) for the e2e tests."""

from tests.fixtures import fixtures_of_every_part

globals().update(fixtures_of_every_part())
