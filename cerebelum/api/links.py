"""OpenAPI links: which answer's fields feed which operation's parameters.

A client generator (and schemathesis's stateful phase, which CI runs) follows them: a start's
`execution_id` to the execution, its events and its state; a dead letter listed to the one.
Added to the generated document by path and method, so they survive operation id changes.
"""

from __future__ import annotations

from typing import Any

# (path, method, status) of the answer -> {link name: (target path, target method, parameters)}
LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    ("/executions", "post", "202"): {
        "GetExecution": ("/executions/{execution_id}", "get",
                         {"execution_id": "$response.body#/execution_id"}),
        "GetExecutionEvents": ("/executions/{execution_id}/events", "get",
                               {"execution_id": "$response.body#/execution_id"}),
        "GetExecutionState": ("/executions/{execution_id}/state", "get",
                              {"execution_id": "$response.body#/execution_id"}),
    },
    ("/dlq", "get", "200"): {
        "GetDeadLetter": ("/dlq/{dead_letter_id}", "get",
                          {"dead_letter_id": "$response.body#/dead_letters/0/id"}),
    },
}  # fmt: skip


def document_links(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with LINKS in its answers (by operationId, which OpenAPI 3.0 and 3.1 share)."""
    paths = schema.get("paths", {})
    for (path, method, status), links in LINKS.items():
        response = paths[path][method]["responses"][status]
        response["links"] = {
            name: {
                "operationId": paths[target][target_method]["operationId"],
                "parameters": parameters,
            }
            for name, (target, target_method, parameters) in links.items()
        }
    return schema
