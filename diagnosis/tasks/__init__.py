"""Celery tasks: thin wrappers (id in -> one service call). Each area has its module; they are
imported here so `autodiscover_tasks` finds them. Task names are explicit: `diagnosis.tasks.<name>`.
"""

from diagnosis.tasks import predictions, training, webhooks  # noqa: F401
