"""The hypervisor: run loop, exit handlers (one module per family), partitions."""
