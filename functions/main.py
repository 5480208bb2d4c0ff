"""Cloud Functions for Firebase entry points: thin wrappers over boxoffice's handlers.

Firebase discovers the functions as attributes of this module; each area keeps its wrappers
in its own module and is re-exported here (one line per area).
"""

from boxoffice.runtime.pipeline_functions import (  # noqa: F401
    analytics_subscriber,
    email_subscriber,
    publish_outbox,
    repair_outbox,
    sweep_outbox,
)
from boxoffice.runtime.inventory_functions import on_inventory_written, reconcile_inventory  # noqa: F401
