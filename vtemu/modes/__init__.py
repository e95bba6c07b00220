"""CPU virtualization techniques, registered by name."""
