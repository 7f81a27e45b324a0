"""The failover benchmark: how long a killed worker's partitions take to resume on a survivor,
against the number of live executions, and how fast `cerebelum.state` restores. See README.md."""
