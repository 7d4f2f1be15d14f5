"""Shared fixtures. Each backend keeps its fixtures in its own module, imported here."""

from _fixtures_clip import *  # noqa: F401,F403
from _fixtures_chroma import *  # noqa: F401,F403
from _fixtures_data import *  # noqa: F401,F403
from _fixtures_fusion import *  # noqa: F401,F403
