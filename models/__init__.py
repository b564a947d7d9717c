"""What a change is, the rules it obeys, and where it is kept. Four layers, each a package with its own public
surface (`__all__`); this module re-exports them all, so callers write `from models import X`:

    domain/    pure rules and shapes: lifecycle, change types, policy, risk, scheduling, checklists, canary
    config/    the settings object and the organisation's YAML, with the shipped defaults
    storage/   the database: tables, migrations, the hash-chained audit trail, queries (all SQLAlchemy)
    services/  one small service per concern over a shared unit of work

No Prefect import anywhere below (a test checks), and nothing outside `models/` imports a private `_x` module.
"""

from . import config, domain, services, storage
from .config import *  # noqa: F403
from .domain import *  # noqa: F403
from .services import *  # noqa: F403
from .storage import *  # noqa: F403

__all__ = [*domain.__all__, *config.__all__, *storage.__all__, *services.__all__]
