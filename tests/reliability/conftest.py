from .helpers import registry  # noqa: F401  (fixture)
