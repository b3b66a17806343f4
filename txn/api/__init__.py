"""txn.api (moving: see the next commit)."""
from txn.api.client import *  # noqa: F401,F403
