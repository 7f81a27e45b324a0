"""A loop: poll a slow job until it is done, with a durable sleep and back_to.

    cerebelum worker --app examples.polling
    cerebelum start poll_job --input '{"job": "j-1", "ready_after": 3}' --wait

The execution sleeps (a durable timer: a worker restart does not lose it), checks the job, and
while it is not ready jumps back to the sleep. `max_iterations` bounds the loop: past it the
execution fails with IterationLimitExceeded instead of polling forever.
"""

from __future__ import annotations

from cerebelum import StepContext, Workflow, back_to, branch, sleep, step


@step
def submit(inputs: dict) -> dict:
    return {"job": inputs["job"], "ready_after": inputs.get("ready_after", 2)}


@step
def check(ctx: StepContext, submit: dict) -> dict:
    # A real step would ask the job's service; here the job is ready after N checks.
    polls = ctx.iteration + 1
    return {"job": submit["job"], "ready": polls >= submit["ready_after"], "polls": polls}


@step
def report(check: dict) -> dict:
    return {"job": check["job"], "status": "done", "polls": check["polls"]}


poll_job = Workflow(
    "poll_job",
    submit >> sleep(0.3, name="pause") >> check >> report,
    rules=[branch(check, when=lambda r: not r["ready"], then=back_to("pause"))],
    max_iterations=20,
)
