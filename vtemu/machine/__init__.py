"""The "silicon": a vCPU on Unicorn, host memory, the reference-machine layout, event delivery."""
