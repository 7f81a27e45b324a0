"""What other live workers of the group run that this one lacks (decisions.md §6).

A start of a workflow this worker does not have is dead-lettered when no live worker has it
(a typo, a retired workflow: the producer hears of it at once), and held as `blocked` when
another live worker has it (a rolling deploy that adds a workflow, whose new workers have not
all started): the execution resumes by itself on a worker that has it once that worker owns
its partition, instead of being refused after the API acknowledged it.

`watch` keeps `registry.elsewhere` (name -> the newest version the live workers publish) up to
date from cerebelum.workflows: it follows the topic (a long poll on one partition) and joins it
with the group's members only when a record names a workflow this worker lacks, so a group
whose workers all run the same app never describes the group for it.
"""

from __future__ import annotations

import asyncio
import logging

from cerebelum.admin.workflows import WorkflowDirectory
from cerebelum.config import Settings
from cerebelum.core.workflow import Registry

log = logging.getLogger(__name__)

REFRESH_S = 5.0


async def watch(settings: Settings, registry: Registry) -> None:
    directory = WorkflowDirectory(settings)
    follower = asyncio.get_running_loop().create_task(directory.run(), name="workflows-reader")
    try:
        await directory.caught_up.wait()
        while True:
            try:
                await refresh(directory, registry)
            except Exception as exc:  # Kafka away: keep what was known, try again
                log.warning("could not tell what the other workers run: %r", exc)
            await asyncio.sleep(REFRESH_S)
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await directory.close()


async def refresh(directory: WorkflowDirectory, registry: Registry) -> None:
    here = set(registry.names())
    if not (directory.published_names() - here):
        registry.elsewhere = {}
        return
    live = await directory.live_workflows(cached=True)
    elsewhere = {name: versions[0] for name, versions in live.workflows.items()
                 if name not in here and versions}  # fmt: skip
    if elsewhere != registry.elsewhere and elsewhere:
        log.warning(
            "other workers of the group run workflows this one lacks (%s): their starts that "
            "land here are held as blocked until a worker with them owns their partition; "
            "run one app per namespace, or the same app on every worker",
            ", ".join(sorted(elsewhere)),
        )
    registry.elsewhere = elsewhere
