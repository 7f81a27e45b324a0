import cerebelum


def test_public_api_is_curated() -> None:
    assert sorted(cerebelum.__all__) == [
        "CerebelumError",
        "Client",
        "ExecutionResult",
        "RateLimit",
        "RetryPolicy",
        "Settings",
        "StepContext",
        "StepError",
        "Workflow",
        "approval",
        "back_to",
        "branch",
        "child",
        "children",
        "continue_",
        "diverge",
        "fail",
        "retry",
        "skip_to",
        "sleep",
        "step",
        "wait_for_signal",
    ]
    for name in cerebelum.__all__:
        assert getattr(cerebelum, name) is not None
