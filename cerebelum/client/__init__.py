from cerebelum.client.client import Client, ExecutionResult, partition_for

__all__ = ["Client", "ExecutionResult", "partition_for"]
