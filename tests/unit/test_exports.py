import cerebelum


def test_public_api_is_curated() -> None:
    assert sorted(cerebelum.__all__) == [
        "CerebelumError",
        "Client",
        "ExecutionResult",
        "Settings",
        "StepContext",
        "StepError",
        "Workflow",
        "step",
    ]
    for name in cerebelum.__all__:
        assert getattr(cerebelum, name) is not None
